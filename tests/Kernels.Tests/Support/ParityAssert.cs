using MoeServer.Kernels.Model;

namespace MoeServer.Kernels.Tests.Support;

/// <summary>How the TorchSharp model is compared with the float64 references: logits rows and per-layer routing.</summary>
internal static class ParityAssert
{
    /// <summary>max|a - ref| / max|ref| over a row.</summary>
    public static double RelativeError(float[] got, double[] reference)
    {
        Assert.Equal(reference.Length, got.Length);
        double diff = 0, scale = 0;
        for (int i = 0; i < got.Length; i++)
        {
            diff = Math.Max(diff, Math.Abs(got[i] - reference[i]));
            scale = Math.Max(scale, Math.Abs(reference[i]));
        }
        return diff / scale;
    }

    public static void AssertClose(float[][] got, double[][] reference, double tol, string what)
    {
        Assert.Equal(reference.Length, got.Length);
        for (int t = 0; t < got.Length; t++)
        {
            double err = RelativeError(got[t], reference[t]);
            Assert.True(err < tol, $"{what}: row {t} relative error {err:E3} >= {tol:E1}");
        }
    }

    /// <summary>Every layer's experts per token, as the model chose them (RoutingObserver) and as the reference did
    /// (<c>want[layer][token]</c>).</summary>
    public static void AssertSameRouting(IReadOnlyList<ExpertRouting> seen, int[][][] want, string what)
    {
        for (int l = 0; l < want.Length; l++)
        {
            var got = seen.Single(r => r.Layer == l);
            Assert.Equal(want[l].Length, got.ExpertsOfToken.Length);
            for (int t = 0; t < want[l].Length; t++)
                Assert.True(want[l][t].SequenceEqual(got.ExpertsOfToken[t]),
                    $"{what}: layer {l} token {t}: reference {string.Join(",", want[l][t])}, model {string.Join(",", got.ExpertsOfToken[t])}");
        }
    }
}
