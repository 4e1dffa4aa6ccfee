using MoeServer.Kernels.Config;
using MoeServer.Kernels.Formats;
using MoeServer.Kernels.Generation;
using MoeServer.Kernels.Model;
using MoeServer.Kernels.Tests.Support;
using MoeServer.Kernels.Tokenization;

namespace MoeServer.Kernels.Tests.Generation;

/// <summary>The training protocol's held-out perplexity (model cards, trained-model tests).</summary>
public sealed class WindowedPerplexityTests
{
    private static double Nll(float[] logits, int target)
    {
        double max = logits.Max(), sum = logits.Sum(v => Math.Exp(v - max));
        return -(logits[target] - max - Math.Log(sum));
    }

    [Fact]
    public void Every_token_after_the_first_is_scored_once_in_windows_from_an_empty_cache()
    {
        string dir = TinyCheckpoints.Get(ModelArchitecture.Mixtral, dtype: TensorDType.F32);
        using var model = MoeModel.Load(dir, WeightPrecision.F32);
        var rng = new Random(3);
        var tokens = Enumerable.Range(0, 300).Select(_ => rng.Next(model.Config.VocabSize)).ToArray();

        var r = PerplexityEvaluator.EvaluateWindows(model, tokens, window: 128);

        Assert.Equal(299, r.ScoredTokens);
        Assert.Equal([128, 128, 43], r.WindowTokens); // windows start at 0, 128, 256; the tail is scored too
        // The second window on its own, from a fresh sequence, token by token as decode would see it.
        using var seq = model.NewSequence();
        double nll = 0;
        for (int t = 128; t < 256; t++) nll += Nll(model.ForwardSequence(seq, [tokens[t]])[0], tokens[t + 1]);
        Assert.Equal(nll, r.WindowNll[1], 1e-2);
        Assert.Equal(Math.Exp(r.WindowNll.Sum() / 299), r.Perplexity, 1e-9);
        Assert.Equal(Math.Exp(r.WindowNll[0] / 128), r.OfFirst(1), 1e-9);
    }

    [Fact]
    public void Line_documents_end_every_non_empty_line_with_end_of_text()
    {
        string dir = TinyCheckpoints.Get(ModelArchitecture.Mixtral);
        var tokenizer = HfTokenizer.Load(dir);
        using var temp = new TempDir();
        string file = temp.File("text.txt");
        File.WriteAllLines(file, ["a b", "", "c"]);

        var tokens = PerplexityEvaluator.LineDocuments(tokenizer, file);

        int eos = tokenizer.EosId!.Value;
        int[] want = [.. tokenizer.Encode("a b", parseSpecialTokens: false), eos, .. tokenizer.Encode("c", parseSpecialTokens: false), eos];
        Assert.Equal(want, tokens);
    }
}
