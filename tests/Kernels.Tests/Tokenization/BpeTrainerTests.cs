using System.Diagnostics;
using System.Text;
using MoeServer.Kernels.Tokenization;

namespace MoeServer.Kernels.Tests.Tokenization;

public class BpeTrainerTests(TokenizerFixture fx) : IClassFixture<TokenizerFixture>
{
    [Fact]
    public void Trained_vocab_has_the_target_size_with_256_byte_symbols_and_specials_at_the_end()
    {
        BpeModel m = fx.Model;
        Assert.Equal(1024, m.VocabSize);
        Assert.Equal(1024, m.Vocab.Count);
        for (int i = 0; i < 256; i++)
        {
            Assert.Equal(i, m.Vocab[ByteLevel.BaseAlphabet[i]]);
        }

        Assert.Equal("!", ByteLevel.BaseAlphabet[0]);
        Assert.Equal("Ġ", ByteLevel.ByteToChar((byte)' ').ToString());
        Assert.Equal(TokenizerFixture.Specials, m.AddedTokens.Select(t => t.Content));
        Assert.All(m.AddedTokens, t => Assert.True(t.Special));
        Assert.Equal(Enumerable.Range(1024 - TokenizerFixture.Specials.Length, TokenizerFixture.Specials.Length), m.AddedTokens.Select(t => t.Id));
        Assert.Equal(1024 - 256 - TokenizerFixture.Specials.Length, m.Merges.Count);
    }

    [Fact]
    public void Every_merge_result_is_in_the_vocab_and_no_special_token_is_learned()
    {
        foreach (var (l, r) in fx.Model.Merges)
        {
            Assert.True(fx.Model.Vocab.ContainsKey(l + r), $"{l}+{r}");
            Assert.DoesNotContain(l + r, TokenizerFixture.Specials);
        }

        Assert.Contains("Ġthe", fx.Model.Vocab.Keys);
    }

    [Fact]
    public void Training_is_deterministic()
    {
        var opts = new BpeTrainerOptions { VocabSize = 600, SpecialTokens = ["<s>"] };
        BpeModel a = BpeTrainer.Train(BuiltInCorpus.Text, opts);
        BpeModel b = BpeTrainer.Train(BuiltInCorpus.Text, opts);
        Assert.Equal(a.Merges, b.Merges);
        Assert.Equal(a.Vocab.OrderBy(kv => kv.Value), b.Vocab.OrderBy(kv => kv.Value));
    }

    [Fact]
    public void The_most_frequent_pair_is_merged_first_and_ties_go_to_the_smaller_ids()
    {
        // Pieces: "ab" x1, " ab" x3, " cd" x3. (a,b) = 4 wins; then (c,d), (Ġ,c), (Ġ,ab) tie at 3:
        // 'c' has a smaller id than 'Ġ' so (c,d) goes first; then (Ġ,ab) beats (Ġ,cd) because ab < cd.
        BpeModel m = BpeTrainer.Train("ab ab ab cd cd cd ab", new BpeTrainerOptions { VocabSize = 260 });
        Assert.Equal([("a", "b"), ("c", "d"), ("Ġ", "ab"), ("Ġ", "cd")], m.Merges);
    }

    [Fact]
    public void Special_tokens_can_take_the_first_ids()
    {
        BpeModel m = BpeTrainer.Train("hello hello", new BpeTrainerOptions
        {
            VocabSize = 300, SpecialTokens = ["<unk>", "<s>", "</s>"], SpecialTokensFirst = true,
        });
        Assert.Equal([0, 1, 2], m.AddedTokens.Select(t => t.Id));
        Assert.Equal(3, m.Vocab["!"]);
    }

    [Fact]
    public void Training_stops_early_when_no_pairs_are_left()
    {
        BpeModel m = BpeTrainer.Train("abc abc", new BpeTrainerOptions { VocabSize = 4096 });
        Assert.True(m.VocabSize < 300);
        HfTokenizer t = HfTokenizer.FromModel(m);
        Assert.Equal(2, t.Encode("abc abc").Length);
    }

    [Fact]
    public void Learns_a_4096_token_vocab_from_200KB_in_a_few_seconds()
    {
        // ~200 KB: the corpus plus variations so the word statistics are not just repeated.
        var sb = new StringBuilder();
        int round = 0;
        while (sb.Length < 200_000)
        {
            string text = BuiltInCorpus.Text;
            sb.Append((round % 3) switch
            {
                0 => text,
                1 => text.ToUpperInvariant(),
                _ => string.Join(' ', text.Split(' ').Reverse()),
            });
            sb.Append(' ').Append(round * 7919).Append('\n');
            round++;
        }

        var sw = Stopwatch.StartNew();
        BpeModel m = BpeTrainer.Train(sb.ToString(), new BpeTrainerOptions { VocabSize = 4096, SpecialTokens = ["<|endoftext|>"] });
        sw.Stop();
        Assert.Equal(4096, m.VocabSize);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(15), $"training took {sw.Elapsed}");
    }

    [Fact]
    public void Training_text_compresses_well_with_the_trained_vocab()
    {
        int bytes = Encoding.UTF8.GetByteCount(BuiltInCorpus.Text);
        int tokens = fx.Tokenizer.Encode(BuiltInCorpus.Text).Length;
        Assert.True(tokens < bytes / 2, $"{tokens} tokens for {bytes} bytes");
    }
}
