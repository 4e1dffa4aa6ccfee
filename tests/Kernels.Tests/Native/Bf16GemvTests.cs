using System.Runtime.Intrinsics;
using MoeServer.Kernels.Native;

namespace MoeServer.Kernels.Tests.Native;

public class Bf16GemvTests
{
    private static readonly WorkerPool Pool = new(2);

    public static TheoryData<GemvPath> Paths()
    {
        var data = new TheoryData<GemvPath> { GemvPath.Scalar };
        if (Vector256.IsHardwareAccelerated)
        {
            data.Add(GemvPath.Vector256);
        }

        // Vector512 runs through the software fallback where the hardware lacks AVX-512: slow, but it checks
        // the 512-bit code (block 4x4, 32-wide tails) for correctness on any machine.
        data.Add(GemvPath.Vector512);
        return data;
    }

    // (n, k): K not a multiple of 16 or 32, N not a multiple of 4, one big enough to be split across the pool.
    private static readonly (int N, int K)[] Shapes = { (37, 301), (6, 1000), (1, 15), (130, 77), (301, 333) };

    [Theory]
    [MemberData(nameof(Paths))]
    public void Multiply_matches_double_reference(GemvPath path)
    {
        foreach (int m in new[] { 1, 2, 3, 4, 5, 8, 32 })
        {
            foreach ((int n, int k) in Shapes)
            {
                var rng = new Random(n * 1000 + k + m);
                ushort[] w = RandomBf16(rng, n * k);
                float[] x = RandomFloats(rng, m * k);
                float[] y = new float[m * n];
                RunWith(path, () => Bf16Gemv.Multiply(w, n, k, x, m, y, pool: Pool));
                AssertClose(Reference(w, n, k, x, m), Norms(w, n, k, x, m), y, $"{path} m={m} n={n} k={k}");
            }
        }
    }

    [Theory]
    [MemberData(nameof(Paths))]
    public void Accumulate_adds_scaled_result(GemvPath path)
    {
        foreach (int m in new[] { 1, 3, 8 })
        {
            (int n, int k) = (301, 333);
            var rng = new Random(m);
            ushort[] w = RandomBf16(rng, n * k);
            float[] x = RandomFloats(rng, m * k);
            float[] y0 = RandomFloats(rng, m * n);
            float[] y = (float[])y0.Clone();
            const float Alpha = 0.37f;
            RunWith(path, () => Bf16Gemv.Multiply(w, n, k, x, m, y, alpha: Alpha, accumulate: true, pool: Pool));
            double[] r = Reference(w, n, k, x, m);
            double[] norms = Norms(w, n, k, x, m);
            AssertClose(r.Select((v, i) => y0[i] + (Alpha * v)).ToArray(), norms.Select(v => Alpha * v + 1).ToArray(), y, $"{path} acc m={m}");

            // Scaled overwrite.
            RunWith(path, () => Bf16Gemv.Multiply(w, n, k, x, m, y, alpha: -2f, pool: Pool));
            AssertClose(r.Select(v => -2 * v).ToArray(), norms.Select(v => 2 * v).ToArray(), y, $"{path} alpha m={m}");
        }
    }

    [Theory]
    [MemberData(nameof(Paths))]
    public void SiluGateUp_matches_reference(GemvPath path)
    {
        foreach (int m in new[] { 1, 2, 3, 4, 8, 32 })
        {
            foreach ((int inter, int k) in new[] { (37, 301), (1, 70), (150, 333) })
            {
                var rng = new Random(inter + k + m);
                ushort[] fused = RandomBf16(rng, 2 * inter * k);
                ushort[] gate = fused[..(inter * k)];
                ushort[] up = fused[(inter * k)..];
                float[] x = RandomFloats(rng, m * k);
                double[] g = Reference(gate, inter, k, x, m);
                double[] u = Reference(up, inter, k, x, m);
                double[] gn = Norms(gate, inter, k, x, m);
                double[] un = Norms(up, inter, k, x, m);
                double[] expected = g.Select((gv, i) => gv / (1 + Math.Exp(-gv)) * u[i]).ToArray();

                // |d(silu(g)·u)| <= (|u|·1.1·|dg| + |silu(g)|·|du|): scale the tolerance by both norms.
                double[] tol = gn.Select((gv, i) => (1.1 * Math.Abs(u[i]) * gv) + ((Math.Abs(g[i]) + 1) * un[i]) + 1e-3).ToArray();

                float[] h1 = new float[m * inter];
                float[] h2 = new float[m * inter];
                RunWith(path, () => Bf16Gemv.SiluGateUp(gate, up, inter, k, x, m, h1, Pool));
                RunWith(path, () => Bf16Gemv.SiluGateUp(fused, inter, k, x, m, h2, Pool));
                AssertClose(expected, tol, h1, $"{path} silu m={m} i={inter} k={k}");
                Assert.Equal(h1, h2);
            }
        }
    }

    /// <summary>
    /// The register-blocked kernel with its blocking shrunk so small shapes cross every boundary: column groups
    /// (M around multiples of the group width, balanced groups of 1..4), several K blocks with a short last one,
    /// K tails, row blocks and chunks with an odd last row, pair prefetch wrapping into the next matrix, K block
    /// and row block, and the next-block cursor. Also runs it at M = 3 and 4, which normally take the single-row
    /// kernels.
    /// </summary>
    [Theory]
    [MemberData(nameof(Paths))]
    public void Tiled_kernel_matches_reference_across_block_boundaries(GemvPath path)
    {
        var configs = new (int Group, int SliceBytes, int BlockBytes, int Prefetch, bool BlockPrefetch)[]
        {
            (4, 16 * 1024, 64 * 1024, 2, true), // production settings
            (4, 1024, 3000, 3, true), // many K blocks, small row blocks
            (3, 2048, 1500, 1, false), // groups of ≤ 3, pair prefetch only
            (3, 512, 1, 0, true), // one row pair per block, no prefetch
            (2, 512, 1, 1, true), // one row pair per block, cursor prefetch past the block's end
            (1, 16 * 1024, 64 * 1024, 5, true), // one column per group
        };
        foreach (var cfg in configs)
        {
            foreach (int m in path == GemvPath.Vector512 ? new[] { 3, 4, 5, 9, 16, 33 } : new[] { 3, 4, 5, 6, 7, 8, 9, 12, 15, 16, 17, 31, 32, 33 })
            {
                foreach ((int n, int k) in new[] { (37, 301), (6, 1000), (130, 77), (1, 40), (66, 1024) })
                {
                    var rng = new Random((n * 31) + k + (m * 7) + cfg.SliceBytes);
                    ushort[] w = RandomBf16(rng, n * k);
                    float[] x = RandomFloats(rng, m * k);
                    float[] y0 = RandomFloats(rng, m * n);
                    float[] y = (float[])y0.Clone();
                    const float Alpha = 0.75f;
                    RunTiled(path, cfg, () => Bf16Gemv.Multiply(w, n, k, x, m, y, alpha: Alpha, accumulate: true, pool: Pool));
                    double[] r = Reference(w, n, k, x, m);
                    double[] norms = Norms(w, n, k, x, m);
                    string what = $"{path} tiled {cfg} m={m} n={n} k={k}";
                    AssertClose(r.Select((v, i) => y0[i] + (Alpha * v)).ToArray(), norms.Select(v => (Alpha * v) + 1).ToArray(), y, what);

                    RunTiled(path, cfg, () => Bf16Gemv.Multiply(w, n, k, x, m, y, pool: Pool));
                    AssertClose(r, norms, y, what);
                }
            }
        }
    }

    [Theory]
    [MemberData(nameof(Paths))]
    public void Tiled_SiluGateUp_matches_reference_across_block_boundaries(GemvPath path)
    {
        var configs = new (int Group, int SliceBytes, int BlockBytes, int Prefetch, bool BlockPrefetch)[]
        {
            (4, 16 * 1024, 64 * 1024, 2, true),
            (4, 1024, 3000, 3, true),
            (3, 2048, 1500, 1, false),
            (2, 512, 1, 1, true),
        };
        foreach (var cfg in configs)
        {
            foreach (int m in new[] { 3, 4, 5, 8, 9, 17 })
            {
                foreach ((int inter, int k) in new[] { (37, 301), (1, 70), (150, 333), (33, 1024) })
                {
                    var rng = new Random(inter + k + m + cfg.BlockBytes);
                    ushort[] fused = RandomBf16(rng, 2 * inter * k);
                    float[] x = RandomFloats(rng, m * k);
                    float[] h = new float[m * inter];
                    RunTiled(path, cfg, () => Bf16Gemv.SiluGateUp(fused, inter, k, x, m, h, Pool));
                    AssertSilu(fused, inter, k, x, m, h, $"{path} tiled silu {cfg} m={m} i={inter} k={k}");
                }
            }
        }
    }

    [Fact]
    public unsafe void Pointer_overload_on_huge_pages_matches_span_overload()
    {
        (int n, int k, int m) = (515, 1030, 2);
        var rng = new Random(7);
        ushort[] w = RandomBf16(rng, n * k);
        float[] x = RandomFloats(rng, m * k);
        using var hw = HugePageBuffer.Allocate<ushort>(w.Length);
        w.CopyTo(hw.AsSpan<ushort>());
        float[] y1 = new float[m * n];
        float[] y2 = new float[m * n];
        Bf16Gemv.Multiply(w, n, k, x, m, y1, pool: Pool);
        fixed (float* px = x)
        fixed (float* py = y2)
        {
            Bf16Gemv.Multiply(hw.GetPointer<ushort>(), n, k, px, m, py, pool: Pool);
        }

        Assert.Equal(y1, y2);
    }

    [Fact]
    public void Rejects_short_spans()
    {
        Assert.Throws<ArgumentException>(() => Bf16Gemv.Multiply(new ushort[10], 2, 6, new float[6], 1, new float[2]));
        Assert.Throws<ArgumentOutOfRangeException>(() => Bf16Gemv.Multiply(new ushort[10], 0, 6, new float[6], 1, new float[2]));
    }

    private static void AssertSilu(ushort[] fused, int inter, int k, float[] x, int m, float[] h, string what)
    {
        ushort[] gate = fused[..(inter * k)];
        ushort[] up = fused[(inter * k)..];
        double[] g = Reference(gate, inter, k, x, m);
        double[] u = Reference(up, inter, k, x, m);
        double[] gn = Norms(gate, inter, k, x, m);
        double[] un = Norms(up, inter, k, x, m);
        double[] expected = g.Select((gv, i) => gv / (1 + Math.Exp(-gv)) * u[i]).ToArray();

        // |d(silu(g)·u)| <= (|u|·1.1·|dg| + |silu(g)|·|du|): scale the tolerance by both norms.
        double[] tol = gn.Select((gv, i) => (1.1 * Math.Abs(u[i]) * gv) + ((Math.Abs(g[i]) + 1) * un[i]) + 1e-3).ToArray();
        AssertClose(expected, tol, h, what);
    }

    private static void RunTiled(GemvPath path, (int Group, int SliceBytes, int BlockBytes, int Prefetch, bool BlockPrefetch) cfg, Action action)
    {
        (int g, int s, int r, int p, bool bp, int b) = (Bf16Gemv.TileGroupColumns, Bf16Gemv.TileXSliceBytes, Bf16Gemv.TileBlockBytes, Bf16Gemv.TilePrefetchPairs, Bf16Gemv.TileBlockPrefetch, Bf16Gemv.SingleRowMaxBatch);
        Bf16Gemv.TileGroupColumns = cfg.Group;
        Bf16Gemv.TileXSliceBytes = cfg.SliceBytes;
        Bf16Gemv.TileBlockBytes = cfg.BlockBytes;
        Bf16Gemv.TilePrefetchPairs = cfg.Prefetch;
        Bf16Gemv.TileBlockPrefetch = cfg.BlockPrefetch;
        Bf16Gemv.SingleRowMaxBatch = 2;
        try
        {
            RunWith(path, action);
        }
        finally
        {
            (Bf16Gemv.TileGroupColumns, Bf16Gemv.TileXSliceBytes, Bf16Gemv.TileBlockBytes, Bf16Gemv.TilePrefetchPairs, Bf16Gemv.TileBlockPrefetch, Bf16Gemv.SingleRowMaxBatch) = (g, s, r, p, bp, b);
        }
    }

    private static void RunWith(GemvPath path, Action action)
    {
        GemvPath old = Bf16Gemv.ForcedPath;
        Bf16Gemv.ForcedPath = path;
        try
        {
            action();
        }
        finally
        {
            Bf16Gemv.ForcedPath = old;
        }
    }

    internal static ushort[] RandomBf16(Random rng, int count)
    {
        var w = new ushort[count];
        for (int i = 0; i < count; i++)
        {
            w[i] = Bf16Convert.ToBf16((float)((rng.NextDouble() * 2) - 1));
        }

        return w;
    }

    internal static float[] RandomFloats(Random rng, int count)
    {
        var x = new float[count];
        for (int i = 0; i < count; i++)
        {
            x[i] = (float)((rng.NextDouble() * 2) - 1);
        }

        return x;
    }

    internal static double[] Reference(ushort[] w, int n, int k, float[] x, int m)
    {
        var y = new double[m * n];
        for (int c = 0; c < m; c++)
        {
            for (int r = 0; r < n; r++)
            {
                double s = 0;
                for (int i = 0; i < k; i++)
                {
                    s += (double)x[(c * k) + i] * Bf16Convert.ToSingle(w[(r * k) + i]);
                }

                y[(c * n) + r] = s;
            }
        }

        return y;
    }

    /// <summary>Σ_k |x·w|, the scale that fp32 rounding error is relative to.</summary>
    private static double[] Norms(ushort[] w, int n, int k, float[] x, int m)
    {
        var y = new double[m * n];
        for (int c = 0; c < m; c++)
        {
            for (int r = 0; r < n; r++)
            {
                double s = 0;
                for (int i = 0; i < k; i++)
                {
                    s += Math.Abs((double)x[(c * k) + i] * Bf16Convert.ToSingle(w[(r * k) + i]));
                }

                y[(c * n) + r] = s;
            }
        }

        return y;
    }

    private static void AssertClose(double[] expected, double[] scale, float[] actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
        {
            double err = Math.Abs(actual[i] - expected[i]);
            if (!(err <= (1e-5 * scale[i]) + 1e-12))
            {
                Assert.Fail($"{what}: element {i}: got {actual[i]}, expected {expected[i]} (err {err:g3}, allowed {1e-5 * scale[i]:g3})");
            }
        }
    }
}
