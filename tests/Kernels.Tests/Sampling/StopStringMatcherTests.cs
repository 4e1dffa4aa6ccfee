using MoeServer.Kernels.Sampling;

namespace MoeServer.Kernels.Tests.Sampling;

public class StopStringMatcherTests
{
    /// <summary>Feeds the deltas, then flushes; returns everything emitted and whether a stop was seen.</summary>
    private static (string Text, bool Stopped, string? Stop) Run(string[] stops, params string[] deltas)
    {
        var m = new StopStringMatcher(stops);
        var text = new System.Text.StringBuilder();
        bool stopped = false;
        string? stop = null;
        foreach (var d in deltas)
        {
            var r = m.Append(d);
            text.Append(r.Text);
            if (r.Stopped && !stopped)
            {
                stopped = true;
                stop = r.StopString;
            }
        }
        text.Append(m.Flush());
        return (text.ToString(), stopped, stop);
    }

    [Fact]
    public void Stop_string_inside_one_delta_truncates_before_it()
    {
        var m = new StopStringMatcher(["###"]);
        var r = m.Append("Hello ### world");
        Assert.Equal(new StopStringResult("Hello ", true, "###"), r);
        Assert.True(m.IsStopped);
        Assert.Equal("###", m.MatchedStopString);
        Assert.Equal("", m.Flush());
    }

    [Fact]
    public void Stop_string_spanning_two_deltas()
    {
        var m = new StopStringMatcher(["END"]);
        Assert.Equal(new StopStringResult("The ", false, null), m.Append("The E"));
        Assert.Equal("E", m.HeldBackText);
        Assert.Equal(new StopStringResult("", true, "END"), m.Append("ND of it"));
    }

    [Fact]
    public void Stop_string_spanning_three_deltas()
    {
        var m = new StopStringMatcher(["</answer>"]);
        Assert.Equal("42 ", m.Append("42 </an").Text);
        Assert.Equal("", m.Append("sw").Text);
        Assert.Equal("</answ", m.HeldBackText);
        var r = m.Append("er> trailing");
        Assert.True(r.Stopped);
        Assert.Equal("", r.Text);
        Assert.Equal("", m.Flush());
    }

    [Fact]
    public void Stop_string_made_of_single_character_deltas()
    {
        var (text, stopped, stop) = Run(["\n\nUser:"], "Hi", ".", "\n", "\n", "U", "s", "e", "r", ":", " more");
        Assert.Equal("Hi.", text);
        Assert.True(stopped);
        Assert.Equal("\n\nUser:", stop);
    }

    [Fact]
    public void Partial_match_that_is_not_a_stop_is_eventually_emitted()
    {
        var m = new StopStringMatcher(["STOP"]);
        Assert.Equal("a ", m.Append("a ST").Text);
        Assert.Equal("ST", m.HeldBackText);
        var r = m.Append("OCK");                     // "STOCK" is not "STOP": all of it goes out
        Assert.Equal(new StopStringResult("STOCK", false, null), r);
        Assert.Equal("", m.HeldBackText);
    }

    [Fact]
    public void Held_back_text_is_released_by_flush()
    {
        var m = new StopStringMatcher(["STOP"]);
        Assert.Equal("the end ", m.Append("the end STO").Text);
        Assert.Equal("STO", m.Flush());
        Assert.Throws<InvalidOperationException>(() => m.Append("x"));
    }

    [Fact]
    public void Only_a_possible_start_is_held_back_not_the_whole_tail()
    {
        // "abab" could start "ababc" at index 0 and at index 2; the earliest possible start holds from 0.
        var m = new StopStringMatcher(["ababc"]);
        Assert.Equal("", m.Append("abab").Text);
        Assert.Equal("ab", m.Append("ab").Text);      // "ababab": the match could now start at 2
        Assert.Equal("abab", m.HeldBackText);
        Assert.Equal(new StopStringResult("", true, "ababc"), m.Append("c"));
    }

    [Fact]
    public void Overlapping_prefix_is_found()
    {
        Assert.Equal(("a", true, "aab"), Run(["aab"], "a", "a", "a", "b"));
    }

    [Fact]
    public void Earliest_stop_string_wins()
    {
        Assert.Equal(("x", true, "ab"), Run(["b", "ab"], "xab"));
        Assert.Equal(("x", true, "ab"), Run(["b", "ab"], "x", "a", "b"));
        // Same start: the first listed is reported; the emitted text is the same either way.
        Assert.Equal(("x", true, "abc"), Run(["abc", "ab"], "xabcd"));
    }

    [Fact]
    public void Text_after_a_stop_is_dropped()
    {
        var m = new StopStringMatcher(["."]);
        Assert.Equal("one", m.Append("one. two").Text);
        Assert.Equal(new StopStringResult("", true, "."), m.Append("three"));
        Assert.Equal("", m.Flush());
    }

    [Fact]
    public void No_stop_strings_passes_text_through()
    {
        var m = new StopStringMatcher(null);
        Assert.Equal(new StopStringResult("abc", false, null), m.Append("abc"));
        Assert.Equal(new StopStringResult("", false, null), m.Append(""));
        Assert.Equal("", m.Flush());
    }

    [Fact]
    public void A_split_surrogate_pair_is_held_until_complete()
    {
        string emoji = "\U0001F600";
        var m = new StopStringMatcher([]);
        Assert.Equal("hi", m.Append("hi" + emoji[0]).Text);
        Assert.Equal(emoji + "!", m.Append(emoji[1] + "!").Text);
    }

    [Fact]
    public void Output_does_not_depend_on_how_the_text_is_split()
    {
        string[] stops = ["<|im_end|>", "\n\n\n", "ababx"];
        string[] texts =
        [
            "Sure. <|im_end|> ignored",
            "abababx then more",
            "no stop here <|im_en but close",
            "lines\n\n and\n\n\n end",
            "<|im_end|>",
            "ab",
        ];
        var rng = new Random(3);
        foreach (var text in texts)
        {
            int cut = -1;
            string? first = null;
            foreach (var s in stops)
            {
                int at = text.IndexOf(s, StringComparison.Ordinal);
                if (at >= 0 && (cut < 0 || at < cut)) (cut, first) = (at, s);
            }
            var expected = (cut < 0 ? text : text[..cut], cut >= 0, first);

            for (int trial = 0; trial < 200; trial++)
            {
                var deltas = new List<string>();
                for (int i = 0; i < text.Length;)
                {
                    int len = Math.Min(rng.Next(0, 5), text.Length - i);  // empty deltas included
                    deltas.Add(text.Substring(i, len));
                    i += len;
                }
                Assert.Equal(expected, Run(stops, [.. deltas]));
            }
        }
    }

    [Fact]
    public void Empty_stop_string_is_rejected()
    {
        Assert.Throws<ArgumentException>(() => new StopStringMatcher(["ok", ""]));
    }
}
