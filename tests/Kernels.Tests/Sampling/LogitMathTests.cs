using System.Runtime.Intrinsics;
using MoeServer.Kernels.Sampling;

namespace MoeServer.Kernels.Tests.Sampling;

public class LogitMathTests
{
    [Fact]
    public void Exp_is_accurate_to_a_few_ulp_over_the_sampling_range()
    {
        for (float x = 0f; x >= -86.9f; x -= 0.0137f)
        {
            double exact = Math.Exp(x);
            Assert.True(Math.Abs(LogitMath.Exp(x) - exact) <= 4e-7 * exact, $"exp({x}) = {LogitMath.Exp(x)}, expected {exact}");
        }
        Assert.Equal(1f, LogitMath.Exp(0f));
    }

    [Fact]
    public void Exp_is_zero_below_the_limit_and_for_masked_tokens()
    {
        Assert.Equal(0f, LogitMath.Exp(float.NegativeInfinity));
        Assert.Equal(0f, LogitMath.Exp(-100f));
        Assert.Equal(0f, LogitMath.Exp(float.MinValue));
    }

    [Fact]
    public void Vector_and_scalar_exp_agree_bit_for_bit()
    {
        var rng = new Random(1);
        for (int trial = 0; trial < 2000; trial++)
        {
            var xs = new float[8];
            for (int i = 0; i < 8; i++) xs[i] = (float)(-90 * rng.NextDouble());
            xs[trial % 8] = trial % 3 == 0 ? float.NegativeInfinity : xs[trial % 8];
            var v = LogitMath.Exp(Vector256.Create(xs));
            for (int i = 0; i < 8; i++)
                Assert.Equal(BitConverter.SingleToInt32Bits(LogitMath.Exp(xs[i])), BitConverter.SingleToInt32Bits(v.GetElement(i)));
        }
    }

    [Fact]
    public void Sums_and_weights_match_a_scalar_reference()
    {
        var x = SamplingTestUtil.RandomLogits(3001, 2);
        x[5] = float.NegativeInfinity;
        float max = x.Max();
        var weights = new float[x.Length];
        var blocks = new double[3];
        double total = LogitMath.ExpWeights(x, max, 0.5f, 0.01f, weights, blocks);
        double expectedTotal = 0;
        for (int i = 0; i < x.Length; i++)
        {
            double w = Math.Exp((x[i] - max) * 0.5);
            if (w < 0.01) w = 0;
            Assert.Equal(w, weights[i], 1e-6);
            expectedTotal += w;
        }
        Assert.Equal(expectedTotal, total, 1e-3);
        Assert.Equal(total, blocks.Sum(), 1e-9);
        Assert.Equal(0f, weights[5]);
        Assert.Equal(LogitMath.SumExp(x, max, 0.5f), LogitMath.ExpWeights(x, max, 0.5f, 0f, weights, blocks));
    }

    [Fact]
    public void ArgMax_and_collect_find_the_right_indices()
    {
        var x = new float[37];
        x[20] = x[33] = 5f;
        x[35] = 4f;
        Assert.Equal(20, LogitMath.ArgMax(x, 5f));
        Assert.Equal(33, LogitMath.ArgMax(x.AsSpan(21), 5f) + 21);   // found in the scalar tail

        x[3] = float.NegativeInfinity;
        var ids = new int[37];
        Assert.Equal(3, LogitMath.CollectAtLeast(x, 4f, ids));
        Assert.Equal([20, 33, 35], ids[..3]);
        Assert.Equal(36, LogitMath.CollectAtLeast(x, float.MinValue, ids));
        Assert.DoesNotContain(3, ids[..36]);
    }
}
