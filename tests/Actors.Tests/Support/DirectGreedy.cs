using MoeServer.Kernels.Model;

namespace MoeServer.Actors.Tests.Support;

/// <summary>The model's direct in-process loop (no actors): greedy tokens and each step's top-2 logit margin.</summary>
public static class DirectGreedy
{
    public static (int[] Tokens, float[] Margins) Run(MoeModel model, int[] prompt, int maxTokens, RoutingOverride? routing = null, IReadOnlySet<int>? eos = null)
    {
        using var seq = model.NewSequence(prompt.Length + maxTokens + 1);
        var logits = model.ForwardSequence(seq, prompt, routing)[^1];
        var tokens = new List<int>();
        var margins = new List<float>();
        for (int i = 0; i < maxTokens; i++)
        {
            var (best, margin) = Top(logits);
            tokens.Add(best);
            margins.Add(margin);
            if (eos?.Contains(best) == true) break;
            if (i + 1 < maxTokens) logits = model.ForwardSequence(seq, [best], routing)[0];
        }
        return (tokens.ToArray(), margins.ToArray());
    }

    public static (int Best, float Margin) Top(float[] x)
    {
        int best = 0;
        for (int i = 1; i < x.Length; i++) if (x[i] > x[best]) best = i;
        float second = float.NegativeInfinity;
        for (int i = 0; i < x.Length; i++) if (i != best && x[i] > second) second = x[i];
        return (best, x[best] - second);
    }

    /// <summary>
    /// Token-for-token equality up to the first step where the direct loop's top-2 margin is below 1e-4 (a near-tie
    /// either answer is right for; batching may reorder float sums). Returns how many steps were compared.
    /// </summary>
    public static int AssertSameGreedy(int[] expected, float[] margins, IReadOnlyList<int> actual, string what)
    {
        int n = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            if (margins[i] < 1e-4f) break;
            Assert.True(i < actual.Count, $"{what}: stream ended after {actual.Count} tokens, expected {expected.Length}");
            Assert.True(expected[i] == actual[i], $"{what}: token {i} is {actual[i]}, expected {expected[i]} (top-2 margin {margins[i]:G3})");
            n++;
        }
        return n;
    }
}
