using MoeServer.Kernels.Native;
using MoeServer.Kernels.Quantization;

namespace MoeServer.Kernels.Tests.Quantization;

/// <summary>
/// The quantized GEMV on every path this CPU runs (always the scalar fallback; a path the CPU lacks returns early)
/// against float64 references: (a) dequantized weights × the activations as the kernel quantized them, which isolates the
/// integer kernels: measured worst 4.6e-7 of Σ|w·x| over all types and paths (AVX-512 Q5_K; AVX2 ≤ 2.3e-7, scalar
/// ≤ 2.2e-7 except F16's fp32 scalar sum 1.1e-6), bound 4e-6; and (b) dequantized weights × the fp32 activations,
/// bounded by the 8-bit activation rounding itself, Σ_blocks Σ|w|·amax/254 (measured worst 0.157 of that bound, Q6_K);
/// and against ggml's own vec_dot on ggml's blocks.
/// </summary>
public class QuantGemvTests
{
    public static readonly GgmlType[] WeightTypes =
    {
        GgmlType.F16, GgmlType.Q4_0, GgmlType.Q4_1, GgmlType.Q5_0, GgmlType.Q5_1, GgmlType.Q8_0, GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K,
    };

    public static readonly QuantPath[] Paths = { QuantPath.Scalar, QuantPath.Avx2, QuantPath.AvxVnni, QuantPath.Avx512 };

    public static TheoryData<GgmlType, QuantPath> TypesAndPaths()
    {
        var d = new TheoryData<GgmlType, QuantPath>();
        foreach (var t in WeightTypes)
            foreach (var p in Paths)
                d.Add(t, p);
        return d;
    }

    [Fact]
    public void HardwarePath_IsSupported_AndDescribed()
    {
        Assert.True(QuantGemv.IsSupported(QuantGemv.HardwarePath));
        Assert.Contains(QuantGemv.HardwarePath.ToString(), QuantGemv.Describe());
    }

    private static bool Skip(QuantPath p) => !QuantGemv.IsSupported(p);

    private static float[] RandomRows(int rows, int k, int seed, double shift = 0)
    {
        var rng = new Random(seed);
        var x = new float[rows * k];
        for (int i = 0; i < x.Length; i++)
            x[i] = (float)((Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble())) + shift + ((i / k) % 3 == 2 ? 3 * rng.NextDouble() : 0));
        return x;
    }

    private static unsafe float[] Run(byte[] w, GgmlType t, int n, int k, float[] x, int m, QuantPath path, float alpha = 1, float[]? yInit = null)
    {
        var y = yInit is null ? new float[m * n] : (float[])yInit.Clone();
        QuantGemv.ForcedPath = path;
        try { QuantGemv.Multiply(w, t, n, k, x, m, y, alpha, accumulate: yInit is not null); }
        finally { QuantGemv.ForcedPath = QuantPath.Auto; }
        return y;
    }

    /// <summary>The activations as the kernel sees them, dequantized in float64 (the kernel's own quantizer).</summary>
    private static unsafe double[] KernelActivations(GgmlType t, float[] x, int m, int k)
    {
        var kind = QuantGemv.Kind(t);
        if (kind == ActivationKind.Float) return x.Select(v => (double)v).ToArray();
        var a = new Q8Activations();
        var r = new double[m * k];
        fixed (float* px = x)
        {
            a.Quantize(kind, px, m, k);
            int block = kind == ActivationKind.Q8K ? 256 : 32;
            for (int c = 0; c < m; c++)
                for (int i = 0; i < k; i++)
                    r[(c * k) + i] = a.Q[(c * a.QStride) + i] * (double)a.D[(c * a.ScaleStride) + (i / block)];
        }

        return r;
    }

    [Fact]
    public unsafe void ActivationQuantization_MatchesGgmlReferenceQuantizers()
    {
        // Q8K activations are ggml's Q8_K (quantize_row_q8_K_ref) exactly; Q8Block32 has ggml's Q8_0 quants
        // (round half away from zero of x·127/amax) with the scale kept in fp32.
        int m = 3, k = 1024;
        float[] x = RandomRows(m, k, 77);
        x[5] = 0; // and a block of zeros
        for (int i = 256; i < 512; i++) x[i] = 0;
        var a = new Q8Activations();
        fixed (float* px = x)
        {
            a.Quantize(ActivationKind.Q8K, px, m, k);
            byte[] g = QuantFormatTests.Quantize(GgmlType.Q8_K, x);
            for (int r = 0; r < m; r++)
                for (int b = 0; b < k / 256; b++)
                {
                    int o = ((r * k / 256) + b) * 292;
                    Assert.Equal(BitConverter.ToSingle(g, o), a.D[(r * a.ScaleStride) + b]);
                    for (int j = 0; j < 256; j++) Assert.Equal((sbyte)g[o + 4 + j], a.Q[(r * a.QStride) + (b * 256) + j]);
                    for (int j = 0; j < 16; j++) Assert.Equal(BitConverter.ToInt16(g, o + 260 + (2 * j)), a.Bsums[(r * a.BsumStride) + (b * 16) + j]);
                }

            a.Quantize(ActivationKind.Q8Block32, px, m, k);
            g = QuantFormatTests.Quantize(GgmlType.Q8_0, x);
            for (int r = 0; r < m; r++)
                for (int b = 0; b < k / 32; b++)
                {
                    int o = ((r * k / 32) + b) * 34, sum = 0;
                    for (int j = 0; j < 32; j++)
                    {
                        Assert.Equal((sbyte)g[o + 2 + j], a.Q[(r * a.QStride) + (b * 32) + j]);
                        sum += (sbyte)g[o + 2 + j];
                    }

                    Assert.Equal(sum, a.Sum[(r * a.ScaleStride) + b]);
                    Assert.Equal((float)ReferenceDequant.Half(g, o), (float)(Half)a.D[(r * a.ScaleStride) + b]);
                }
        }
    }

    [Theory]
    [MemberData(nameof(TypesAndPaths))]
    public void Multiply_MatchesFloat64Reference(GgmlType type, QuantPath path)
    {
        if (Skip(path)) return;
        foreach (int k in GgmlTypeInfo.BlockSize(type) == 256 ? new[] { 256, 768 } : new[] { 416, 384, 1024 })
        {
            foreach (int m in new[] { 1, 2, 5, 8, 32 })
            {
                int n = 19;
                float[] wf = RandomRows(n, k, 11 + k + m, shift: 0.3);
                byte[] w = QuantFormatTests.Quantize(type, wf);
                double[] wd = ReferenceDequant.Row(QuantFormatTests.Name(type), w, 0, n * k);
                float[] x = RandomRows(m, k, 5 + m);
                double[] xq = KernelActivations(type, x, m, k);
                float[] y = Run(w, type, n, k, x, m, path);
                int block = GgmlTypeInfo.BlockSize(type) == 256 ? 256 : 32;
                for (int c = 0; c < m; c++)
                {
                    for (int r = 0; r < n; r++)
                    {
                        double exactQ = 0, exact = 0, mag = 0, actBound = 0;
                        for (int b = 0; b < k; b += block)
                        {
                            double amax = 0, wAbs = 0;
                            for (int i = b; i < b + block; i++)
                            {
                                double wi = wd[(r * k) + i];
                                exactQ += wi * xq[(c * k) + i];
                                exact += wi * x[(c * k) + i];
                                mag += Math.Abs(wi * x[(c * k) + i]);
                                amax = Math.Max(amax, Math.Abs(x[(c * k) + i]));
                                wAbs += Math.Abs(wi);
                            }

                            actBound += type == GgmlType.F16 ? 0 : wAbs * amax / 254;
                        }

                        double got = y[(c * n) + r];
                        Assert.True(Math.Abs(got - exactQ) <= 4e-6 * mag + 1e-30, $"{type} {path} k={k} m={m} [{c},{r}]: {got} vs {exactQ} (quantized x), |Σw·x| {mag}");
                        Assert.True(Math.Abs(got - exact) <= (1.001 * actBound) + (4e-6 * mag), $"{type} {path} k={k} m={m} [{c},{r}]: {got} vs {exact}, bound {actBound}");
                    }
                }
            }
        }
    }

    [Theory]
    [MemberData(nameof(TypesAndPaths))]
    public void Paths_AgreeWithScalar_Parallel_AndAccumulate(GgmlType type, QuantPath path)
    {
        if (Skip(path)) return;
        int n = 300, k = 1024, m = 4;
        byte[] w = QuantFormatTests.Quantize(type, RandomRows(n, k, 3));
        float[] x = RandomRows(m, k, 4);
        float[] ys = Run(w, type, n, k, x, m, QuantPath.Scalar);
        float[] yInit = RandomRows(m, n, 9);
        float[] yp = Run(w, type, n, k, x, m, path, alpha: 0.25f, yInit: yInit);
        double[] wd = ReferenceDequant.Row(QuantFormatTests.Name(type), w, 0, n * k);
        for (int i = 0; i < ys.Length; i++)
        {
            int c = i / n, r = i % n;
            double mag = 0;
            for (int j = 0; j < k; j++) mag += Math.Abs(wd[(r * k) + j] * x[(c * k) + j]);
            double want = yInit[i] + (0.25 * ys[i]);
            // Paths differ only in fp32 summation order: measured ≤ 2e-7 of Σ|w·x|.
            Assert.True(Math.Abs(yp[i] - want) <= (1e-6 * 0.25 * mag) + (1e-6 * Math.Abs(yInit[i])), $"{type} {path} [{i}]: {yp[i]} vs {want}, Σ|w·x| {mag}");
        }
    }

    [Theory]
    [MemberData(nameof(TypesAndPaths))]
    public unsafe void SiluGateUp_MatchesTwoProducts(GgmlType type, QuantPath path)
    {
        if (Skip(path)) return;
        int inter = 70, k = 512, m = 3;
        byte[] g = QuantFormatTests.Quantize(type, RandomRows(inter, k, 21));
        byte[] u = QuantFormatTests.Quantize(type, RandomRows(inter, k, 22));
        float[] x = RandomRows(m, k, 23);
        float[] yg = Run(g, type, inter, k, x, m, path);
        float[] yu = Run(u, type, inter, k, x, m, path);
        var h = new float[m * inter];
        QuantGemv.ForcedPath = path;
        try { QuantGemv.SiluGateUp(g, u, type, inter, k, x, m, h); }
        finally { QuantGemv.ForcedPath = QuantPath.Auto; }
        for (int i = 0; i < h.Length; i++)
        {
            double want = yg[i] / (1 + Math.Exp(-yg[i])) * yu[i];
            Assert.True(Math.Abs(h[i] - want) <= 1e-5 * (Math.Abs(want) + 1e-3), $"{type} {path} [{i}]: {h[i]} vs {want}");
        }
    }

    public static TheoryData<string, QuantPath> FixturesAndPaths()
    {
        var d = new TheoryData<string, QuantPath>();
        foreach (var c in new[] { "random768", "random416", "random384", "special256" })
            foreach (var p in Paths)
                d.Add(c, p);
        return d;
    }

    /// <summary>Our kernels on ggml's own weight and activation blocks give ggml's vec_dot results (fp32 summation order aside).</summary>
    [Theory]
    [MemberData(nameof(FixturesAndPaths))]
    public unsafe void Dot_MatchesGgmlVecDot(string name, QuantPath path)
    {
        if (Skip(path)) return;
        var fx = QuantFixture.Load(name);
        int checkedDots = 0;
        foreach (var e in fx.Entries.Where(e => e.Name.StartsWith("dot:", StringComparison.Ordinal)))
        {
            GgmlType wt = fx.Entries.Single(q => q.Name == e.Name[4..]).Type;
            byte[] wbytes = fx.Quantized(wt).Bytes;
            byte[] abytes = fx.Quantized(e.Type).Bytes;
            var act = new Q8Activations();
            var result = new float[fx.Rows];
            int[] pairs = Enumerable.Range(0, fx.Rows).Select(r => (r + 1) % fx.Rows).ToArray();
            double[] wd = ReferenceDequant.Row(e.Name[4..], wbytes, 0, fx.Rows * fx.N);
            double[] ad = ReferenceDequant.Row(QuantFormatTests.Name(e.Type), abytes, 0, fx.Rows * fx.N);
            fixed (byte* pw = wbytes)
            fixed (byte* pa = abytes)
            {
                act.LoadGgml(e.Type, pa, fx.Rows, fx.N);
                QuantGemv.DotRows(new QuantizedMatrix(pw, wt, fx.Rows, fx.N), act, pairs, result, path);
            }

            for (int r = 0; r < fx.Rows; r++)
            {
                double mag = 0;
                for (int i = 0; i < fx.N; i++) mag += Math.Abs(wd[(r * fx.N) + i] * ad[(pairs[r] * fx.N) + i]);
                // ggml's Q8_1 carries s = d·Σq rounded to fp16, computed before d itself is rounded to fp16 (so s can be
                // non-zero where d rounds to 0); our kernels use d·Σq from the stored d. The difference in the min term
                // Σ_b m_b·(s_b − d_b·Σq_b) is the only allowed extra.
                double tol = (4e-6 * mag) + 1e-30;
                if (e.Type == GgmlType.Q8_1)
                {
                    int wbs = GgmlTypeInfo.TypeSize(wt);
                    for (int b = 0; b < fx.N / 32; b++)
                    {
                        int wo = ((r * fx.N / 32) + b) * wbs, ao = ((pairs[r] * fx.N / 32) + b) * 36;
                        double mw = ReferenceDequant.Half(wbytes, wo + 2), dA = ReferenceDequant.Half(abytes, ao), sA = ReferenceDequant.Half(abytes, ao + 2);
                        int sumq = 0;
                        for (int j = 0; j < 32; j++) sumq += (sbyte)abytes[ao + 4 + j];
                        tol += Math.Abs(mw * (sA - (dA * sumq))) * 1.0001;
                    }
                }

                Assert.True(Math.Abs(result[r] - e.Floats[r]) <= tol, $"{name} {e.Name} {path} row {r}: ours {result[r]:R}, ggml {e.Floats[r]:R}, Σ|w·x| {mag}");
                checkedDots++;
            }
        }

        Assert.True(checkedDots >= 10);
    }
}
