using System.Diagnostics;
using System.Text.Json;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Formats;
using MoeServer.Kernels.Formats.Gguf;
using MoeServer.Kernels.Tests.Formats;
using MoeServer.Kernels.Tokenization;

namespace MoeServer.Kernels.Tests.Tokenization;

/// <summary>
/// Fuzz finding (issue 15): one very long word (pre-token) made tokenization quadratic in Microsoft.ML.Tokenizers'
/// BPE (80,000 letters took 0.8 s; a 4 MiB request body of one letter, minutes of a core): a CPU denial of service
/// through /tokenize or any prompt. Pre-tokens longer than <see cref="BpeMerger.LongPiece"/> now go through
/// <see cref="BpeMerger"/>, which must give exactly the ids of the reference BPE.
/// </summary>
public sealed class LongWordTests(TokenizerFixture fx) : IClassFixture<TokenizerFixture>
{
    public static TheoryData<string> LongWords()
    {
        var rng = new Random(15);
        string[] words = BuiltInCorpus.Text.Split([' ', '\n', '\t'], StringSplitOptions.RemoveEmptyEntries);
        string Glued(int minLength)
        {
            var sb = new System.Text.StringBuilder();
            while (sb.Length < minLength) sb.Append(words[rng.Next(words.Length)].Where(char.IsLetter).ToArray());
            return sb.ToString();
        }
        return
        [
            new string('a', BpeMerger.LongPiece + 1),
            new string('e', 3001),
            string.Concat(Enumerable.Repeat("the", 400)),
            string.Concat(Enumerable.Repeat("é", 700)), // two bytes per character
            Glued(300),
            Glued(2500),
            "prefix " + Glued(1000) + " suffix, and more words after it.",
            new string('7', 1200) + " " + new string('x', 10), // digits pre-tokenize in runs too
        ];
    }

    [Theory]
    [MemberData(nameof(LongWords))]
    public void A_long_word_encodes_exactly_like_the_reference_bpe(string text)
    {
        Assert.Equal(ReferenceBpe.Encode(fx.Model, text), fx.Tokenizer.Encode(text));
        Assert.Equal(text, fx.Tokenizer.Decode(fx.Tokenizer.Encode(text)));
    }

    [Fact]
    public void Words_just_below_and_above_the_long_piece_length_agree()
    {
        foreach (int n in new[] { BpeMerger.LongPiece - 1, BpeMerger.LongPiece, BpeMerger.LongPiece + 1, BpeMerger.LongPiece + 2 })
        {
            string text = string.Concat(Enumerable.Range(0, n).Select(i => "abcdefghij"[(i * 7) % 10]));
            Assert.Equal(ReferenceBpe.Encode(fx.Model, text), fx.Tokenizer.Encode(text));
        }
    }

    /// <summary>Guards against the quadratic path coming back: two million letters in one word take well under a
    /// second in O(n log n) and far beyond the bound (hours) when quadratic; the bound is 30 s so a loaded 2-core CI
    /// machine cannot fail it.</summary>
    [Fact]
    public void Two_million_letters_in_one_word_tokenize_in_n_log_n()
    {
        string text = string.Concat(Enumerable.Repeat("abcab", 400_000));
        var clock = Stopwatch.StartNew();
        int[] ids = fx.Tokenizer.Encode(text);
        clock.Stop();
        Assert.Equal(text, fx.Tokenizer.Decode(ids));
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(30), $"2M letters took {clock.Elapsed.TotalSeconds:0.0} s");
    }

    /// <summary>The same defect in GGUF byte-level BPE (llama.cpp's merge loop rescans the symbols for every merge):
    /// long words merge with <see cref="BpeMerger.MergeByRank"/>, which must match the rescanning loop (written here)
    /// and, end to end, the checkpoint's tokenizer.json.</summary>
    [Fact]
    public void Gguf_byte_level_bpe_merges_a_long_word_like_the_rescanning_loop()
    {
        string hf = GgufModelTests.HfCheckpoint(ModelArchitecture.Mixtral);
        string dir = Directory.CreateTempSubdirectory("gguf-long-word-").FullName;
        try
        {
            string path = Path.Combine(dir, "m.gguf");
            GgufExporter.Export(hf, path, GgmlType.F32);
            var gguf = Assert.IsType<GgufBpeTokenizer>(ModelTokenizer.Load(path));
            var json = HfTokenizer.Load(hf);
            var ranks = new Dictionary<(string, string), int>();
            using (var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(hf, "tokenizer.json"))))
            {
                int rank = 0;
                foreach (var m in doc.RootElement.GetProperty("model").GetProperty("merges").EnumerateArray())
                {
                    string[] parts = m.ValueKind == JsonValueKind.String ? m.GetString()!.Split(' ') : [m[0].GetString()!, m[1].GetString()!];
                    ranks.TryAdd((parts[0], parts[1]), rank++);
                }
            }
            foreach (string text in LongWords())
            {
                foreach (string word in text.Split(' ').Select(ByteLevel.Encode))
                    Assert.Equal(RescanningMerge(word, ranks), BpeMerger.MergeByRank(word, ranks));
                Assert.Equal(json.Encode(text), gguf.Encode(text));
            }
            string huge = string.Concat(Enumerable.Repeat("abcab", 400_000));
            var clock = Stopwatch.StartNew();
            Assert.Equal(huge, gguf.Decode(gguf.Encode(huge)));
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(30), $"2M letters took {clock.Elapsed.TotalSeconds:0.0} s");
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    private static List<string> RescanningMerge(string word, Dictionary<(string, string), int> ranks)
    {
        var symbols = word.Select(c => c.ToString()).ToList();
        while (symbols.Count > 1)
        {
            int best = -1, bestRank = int.MaxValue;
            for (int i = 0; i + 1 < symbols.Count; i++)
            {
                if (ranks.TryGetValue((symbols[i], symbols[i + 1]), out int r) && r < bestRank)
                {
                    bestRank = r;
                    best = i;
                }
            }
            if (best < 0) break;
            symbols[best] += symbols[best + 1];
            symbols.RemoveAt(best + 1);
        }
        return symbols;
    }
}
