using MoeServer.Kernels.Sampling;

namespace MoeServer.Kernels.Tests.Sampling;

internal static class SamplingTestUtil
{
    /// <summary>Logits whose softmax is <paramref name="probs"/> (0 gives -Infinity).</summary>
    public static float[] LogitsOf(params double[] probs) =>
        probs.Select(p => p == 0 ? float.NegativeInfinity : (float)Math.Log(p)).ToArray();

    public static double[] Softmax(IReadOnlyList<float> logits, double temperature = 1)
    {
        double max = logits.Max();
        var e = logits.Select(l => Math.Exp((l - max) / temperature)).ToArray();
        double sum = e.Sum();
        return e.Select(v => v / sum).ToArray();
    }

    public static double[] LogSoftmax(IReadOnlyList<float> logits)
    {
        double max = logits.Where(float.IsFinite).Max();
        double logZ = max + Math.Log(logits.Sum(l => Math.Exp(l - max)));
        return logits.Select(l => l - logZ).ToArray();
    }

    /// <summary>Samples <paramref name="n"/> tokens from the same row and counts each id.</summary>
    public static int[] Counts(TokenSampler sampler, float[] logits, int n)
    {
        var counts = new int[logits.Length];
        for (int i = 0; i < n; i++) counts[sampler.Sample(logits).TokenId]++;
        return counts;
    }

    /// <summary>Pearson chi-square statistic of observed counts against expected probabilities.</summary>
    public static double ChiSquare(IReadOnlyList<int> observed, IReadOnlyList<double> expected)
    {
        int n = observed.Sum();
        double stat = 0;
        for (int i = 0; i < observed.Count; i++)
        {
            double e = expected[i] * n;
            stat += (observed[i] - e) * (observed[i] - e) / e;
        }
        return stat;
    }

    /// <summary>Chi-square critical values at p = 0.001 by degrees of freedom (index = df).</summary>
    public static readonly double[] ChiSquareCritical001 = [double.NaN, 10.83, 13.82, 16.27, 18.47, 20.52, 22.46];

    /// <summary>Makes <paramref name="token"/> the only possible choice, so the sampler records it.</summary>
    public static void Force(TokenSampler sampler, int vocab, int token)
    {
        var row = Enumerable.Repeat(float.NegativeInfinity, vocab).ToArray();
        row[token] = 0f;
        Assert.Equal(token, sampler.Sample(row).TokenId);
    }

    /// <summary>Token ids by logit, highest first, ties lower id first (the sampler's order).</summary>
    public static int[] RankedIds(float[] logits) =>
        Enumerable.Range(0, logits.Length)
            .Where(i => !float.IsNegativeInfinity(logits[i]))
            .OrderByDescending(i => logits[i]).ThenBy(i => i).ToArray();

    public static float[] RandomLogits(int vocab, int seed, double scale = 3)
    {
        var rng = new Random(seed);
        var row = new float[vocab];
        for (int i = 0; i < vocab; i++)
        {
            // Box-Muller normal, scaled: a peaked distribution like a language model's.
            double u1 = 1 - rng.NextDouble(), u2 = rng.NextDouble();
            row[i] = (float)(scale * Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
        }
        return row;
    }
}
