using MoeServer.Kernels.Quantization;

namespace MoeServer.Kernels.Tests.Quantization;

public class QuantFormatTests
{
    public static readonly GgmlType[] BlockTypes =
    {
        GgmlType.F16, GgmlType.Q4_0, GgmlType.Q4_1, GgmlType.Q5_0, GgmlType.Q5_1, GgmlType.Q8_0, GgmlType.Q8_1,
        GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K, GgmlType.Q8_K,
    };

    public static TheoryData<string> Cases() => new(QuantFixture.Cases);

    public static TheoryData<GgmlType> Types() => new(BlockTypes);

    public static string Name(GgmlType t) => t switch
    {
        GgmlType.Q4_K => "q4_K", GgmlType.Q5_K => "q5_K", GgmlType.Q6_K => "q6_K", GgmlType.Q8_K => "q8_K",
        _ => t.ToString().ToLowerInvariant(),
    };

    public static byte[] Quantize(GgmlType t, float[] x)
    {
        var q = new byte[GgmlTypeInfo.RowSize(t, x.Length)];
        QuantizeReference.Quantize(t, x, q);
        return q;
    }

    public static float[] Dequant(GgmlType t, byte[] q, int n)
    {
        var y = new float[n];
        Dequantize.Row(t, q, y);
        return y;
    }

    [Fact]
    public void Geometry_MatchesGgml()
    {
        // ggml-common.h static_asserts: sizeof(block_q4_0) == 18, ... sizeof(block_q8_K) == 292.
        Assert.Equal(18, GgmlTypeInfo.TypeSize(GgmlType.Q4_0));
        Assert.Equal(20, GgmlTypeInfo.TypeSize(GgmlType.Q4_1));
        Assert.Equal(22, GgmlTypeInfo.TypeSize(GgmlType.Q5_0));
        Assert.Equal(24, GgmlTypeInfo.TypeSize(GgmlType.Q5_1));
        Assert.Equal(34, GgmlTypeInfo.TypeSize(GgmlType.Q8_0));
        Assert.Equal(36, GgmlTypeInfo.TypeSize(GgmlType.Q8_1));
        Assert.Equal(144, GgmlTypeInfo.TypeSize(GgmlType.Q4_K));
        Assert.Equal(176, GgmlTypeInfo.TypeSize(GgmlType.Q5_K));
        Assert.Equal(210, GgmlTypeInfo.TypeSize(GgmlType.Q6_K));
        Assert.Equal(292, GgmlTypeInfo.TypeSize(GgmlType.Q8_K));
        Assert.Equal(416 / 32 * 22, GgmlTypeInfo.RowSize(GgmlType.Q5_0, 416));
        Assert.False(GgmlTypeInfo.Fits(GgmlType.Q4_K, 416));
        Assert.Throws<ArgumentException>(() => GgmlTypeInfo.RowSize(GgmlType.Q6_K, 384));
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Golden_QuantizeEqualsLlamaCppBytes(string name)
    {
        var fx = QuantFixture.Load(name);
        int checkedTypes = 0;
        foreach (var e in fx.Entries.Where(e => e.Name != "input" && !e.Name.StartsWith("dot:", StringComparison.Ordinal)))
        {
            byte[] ours = Quantize(e.Type, fx.Input);
            Assert.Equal(e.Bytes.Length, ours.Length);
            int first = FirstDiff(ours, e.Bytes);
            Assert.True(first < 0, $"{name} {e.Name}: first differing byte {first} (block {first / GgmlTypeInfo.TypeSize(e.Type)}): ours {ours[Math.Max(first, 0)]}, ggml {e.Bytes[Math.Max(first, 0)]}");
            checkedTypes++;
        }

        Assert.True(checkedTypes >= 7);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Golden_DequantizeEqualsLlamaCppFloats(string name)
    {
        var fx = QuantFixture.Load(name);
        foreach (var e in fx.Entries.Where(e => e.Name != "input" && !e.Name.StartsWith("dot:", StringComparison.Ordinal) && e.Floats.Length > 0))
        {
            float[] ours = Dequant(e.Type, e.Bytes, fx.Input.Length);
            for (int i = 0; i < ours.Length; i++)
            {
                if (BitConverter.SingleToInt32Bits(ours[i]) != BitConverter.SingleToInt32Bits(e.Floats[i]))
                {
                    Assert.Fail($"{name} {e.Name}[{i}]: ours {ours[i]:R}, ggml {e.Floats[i]:R}");
                }
            }
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Golden_Float64ReferenceReadsLlamaCppBlocks(string name)
    {
        // The format description (ReferenceDequant) applied to ggml's own bytes gives ggml's floats, to fp32 rounding.
        var fx = QuantFixture.Load(name);
        foreach (var e in fx.Entries.Where(e => e.Name != "input" && !e.Name.StartsWith("dot:", StringComparison.Ordinal) && e.Floats.Length > 0))
        {
            double[] r = ReferenceDequant.Row(e.Name, e.Bytes, 0, fx.Input.Length);
            for (int i = 0; i < r.Length; i++)
            {
                double tol = 1e-6 * Math.Abs(r[i]) + 1e-30;
                Assert.True(Math.Abs(r[i] - e.Floats[i]) <= tol, $"{name} {e.Name}[{i}]: reference {r[i]:R}, ggml {e.Floats[i]:R}");
            }
        }
    }

    [Theory]
    [MemberData(nameof(Types))]
    public void Dequantize_MatchesFloat64Reference_OnArbitraryBlocks(GgmlType type)
    {
        // Blocks from real data, then every quant byte randomized (scales kept finite): all bit patterns of the
        // quant fields must decode as the format description says.
        var rng = new Random(1000 + (int)type);
        int n = 2 * GgmlTypeInfo.BlockSize(type) * (GgmlTypeInfo.BlockSize(type) == 1 ? 64 : 1);
        var x = Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 4 - 2)).ToArray();
        byte[] q = Quantize(type, x);
        int[] scaleBytes = ScaleByteOffsets(type);
        int bs = GgmlTypeInfo.TypeSize(type);
        for (int i = 0; i < q.Length; i++)
        {
            if (!scaleBytes.Contains(i % bs))
            {
                q[i] = (byte)rng.Next(256);
            }
        }

        float[] ours = Dequant(type, q, n);
        double[] r = ReferenceDequant.Row(Name(type), q, 0, n);
        for (int i = 0; i < n; i++)
        {
            Assert.True(Math.Abs(r[i] - ours[i]) <= 1e-6 * Math.Abs(r[i]) + 1e-30, $"{type}[{i}]: reference {r[i]:R}, ours {ours[i]:R}");
        }
    }

    /// <summary>Byte offsets inside a block of the fp16/fp32 scale fields (left as quantized so they stay finite).</summary>
    private static int[] ScaleByteOffsets(GgmlType t) => t switch
    {
        GgmlType.F16 => new[] { 0, 1 },
        GgmlType.Q4_0 or GgmlType.Q5_0 or GgmlType.Q8_0 => new[] { 0, 1 },
        GgmlType.Q4_1 or GgmlType.Q5_1 or GgmlType.Q8_1 or GgmlType.Q4_K or GgmlType.Q5_K => new[] { 0, 1, 2, 3 },
        GgmlType.Q6_K => new[] { 208, 209 },
        GgmlType.Q8_K => new[] { 0, 1, 2, 3 },
        _ => Array.Empty<int>(),
    };

    [Fact]
    public void HandMade_Q4_0_Block()
    {
        // d = 0.5, qs[j] = j | (15 - j) << 4: element j = 0.5·(j − 8), element 16 + j = 0.5·(7 − j).
        var b = new byte[18];
        BitConverter.TryWriteBytes(b.AsSpan(0, 2), BitConverter.HalfToUInt16Bits((Half)0.5f));
        for (int j = 0; j < 16; j++) b[2 + j] = (byte)(j | ((15 - j) << 4));
        float[] y = Dequant(GgmlType.Q4_0, b, 32);
        for (int j = 0; j < 16; j++)
        {
            Assert.Equal(0.5f * (j - 8), y[j]);
            Assert.Equal(0.5f * (7 - j), y[16 + j]);
        }
    }

    [Fact]
    public void HandMade_Q5_1_NegativeMin()
    {
        // d = 0.25, m = -3, every low nibble 15, fifth bits set on odd elements: 0.25·(15 or 31) − 3.
        var b = new byte[24];
        BitConverter.TryWriteBytes(b.AsSpan(0, 2), BitConverter.HalfToUInt16Bits((Half)0.25f));
        BitConverter.TryWriteBytes(b.AsSpan(2, 2), BitConverter.HalfToUInt16Bits((Half)(-3f)));
        BitConverter.TryWriteBytes(b.AsSpan(4, 4), 0xAAAAAAAAu);
        for (int j = 0; j < 16; j++) b[8 + j] = 0xFF;
        float[] y = Dequant(GgmlType.Q5_1, b, 32);
        for (int e = 0; e < 32; e++) Assert.Equal(e % 2 == 1 ? 0.25f * 31 - 3 : 0.25f * 15 - 3, y[e]);
    }

    [Fact]
    public void HandMade_Q4_K_ScalesAndMins()
    {
        // Sub-block s gets scale s + 1 (6 bits: s = 5 puts 6 in scale 5, through the high-bit packing) and min 60 − s,
        // d = 0.125, dmin = 0.0625, every quant = s % 16: element of sub-block s = 0.125·(s+1)·(s%16) − 0.0625·(60−s).
        var b = new byte[144];
        BitConverter.TryWriteBytes(b.AsSpan(0, 2), BitConverter.HalfToUInt16Bits((Half)0.125f));
        BitConverter.TryWriteBytes(b.AsSpan(2, 2), BitConverter.HalfToUInt16Bits((Half)0.0625f));
        var sc = b.AsSpan(4, 12);
        for (int s = 0; s < 8; s++)
        {
            int ls = s + 1, lm = 60 - s;
            if (s < 4) { sc[s] = (byte)ls; sc[s + 4] = (byte)lm; }
            else
            {
                sc[s + 4] = (byte)((ls & 15) | ((lm & 15) << 4));
                sc[s - 4] |= (byte)((ls >> 4) << 6);
                sc[s] |= (byte)((lm >> 4) << 6);
            }
        }

        for (int s = 0; s < 8; s++)
            for (int l = 0; l < 32; l++)
                b[16 + (32 * (s / 2)) + l] |= (byte)(s % 2 == 0 ? s : s << 4);
        float[] y = Dequant(GgmlType.Q4_K, b, 256);
        for (int e = 0; e < 256; e++)
        {
            int s = e / 32;
            Assert.Equal(0.125 * (s + 1) * s - 0.0625 * (60 - s), y[e], 6);
        }
    }

    [Fact]
    public void HandMade_Q6_K_NegativeScale()
    {
        // d = 1/64, scale of group g = (g odd ? −g : g), all quants 0 (−32 after the offset) except element 200 = 63.
        var b = new byte[210];
        BitConverter.TryWriteBytes(b.AsSpan(208, 2), BitConverter.HalfToUInt16Bits((Half)(1f / 64)));
        for (int g = 0; g < 16; g++) b[192 + g] = (byte)(sbyte)(g % 2 == 1 ? -g : g);
        // Element 200: half 1, quarter 2 (e % 128 = 72), l = 8 -> high nibble of ql[64 + 8], qh[32 + 8] bits 4-5.
        b[64 + 8] |= 0xF0;
        b[128 + 32 + 8] |= 3 << 4;
        float[] y = Dequant(GgmlType.Q6_K, b, 256);
        double[] r = ReferenceDequant.Row("q6_K", b, 0, 256);
        for (int e = 0; e < 256; e++) Assert.Equal(r[e], y[e], 6);
        Assert.Equal(1.0 / 64 * 12 * 31, y[200], 6); // scale index 8·1 + 8/16 + 2·2 = 12, q = 63 − 32
        Assert.Equal(1.0 / 64 * -1 * -32, y[16], 6);   // scale index 1 (−1), q = 0 − 32
    }

    [Theory]
    [MemberData(nameof(Types))]
    public void AllEqualValues_RoundTripToFp16Precision(GgmlType type)
    {
        foreach (float v in new[] { 0.37f, -1.25f, 0f, 1e-3f })
        {
            int n = Math.Max(256, GgmlTypeInfo.BlockSize(type));
            var x = Enumerable.Repeat(v, n).ToArray();
            float[] y = Dequant(type, Quantize(type, x), n);
            // One fp16 rounding of a scale (2^-11 relative), times the level it multiplies; K-quant 6-bit scales add
            // their own rounding (measured worst: Q4_K/Q5_K 1.4%, Q6_K 2.3% at 1e-3).
            double tol = type switch { GgmlType.Q4_K or GgmlType.Q5_K or GgmlType.Q6_K => 0.03, _ => 1.5e-3 } * Math.Abs(v);
            for (int i = 0; i < n; i++) Assert.True(Math.Abs(y[i] - v) <= tol, $"{type} v={v}: y[{i}] = {y[i]:R}");
        }
    }

    /// <summary>
    /// Relative RMS round-trip error ||dequant(quant(x)) − x|| / ||x|| on rows of 8192 N(0,1) values (scaled by 1, 1e4 and
    /// 1e-5, and shifted by −3), against the measured value with ~10% headroom (measured on this implementation, which
    /// is byte-identical to ggml's; the table is in docs/quantization.md). Magnitudes of 1e-5 underflow the fp16 scales:
    /// Q6_K then stores all zeros (error 1.0) and Q5_K's min overshoots (2.2), exactly as llama.cpp's quantizer does.
    /// </summary>
    [Theory]
    [InlineData(GgmlType.F16, 0.00023, 0.0019, 0.00023)]
    [InlineData(GgmlType.Q8_0, 0.0059, 0.106, 0.0040)]
    [InlineData(GgmlType.Q8_1, 0.0059, 0.106, 0.0040)]
    [InlineData(GgmlType.Q8_K, 0.0077, 0.0077, 0.0047)]
    [InlineData(GgmlType.Q6_K, 0.0197, 1.0, 0.0132)]
    [InlineData(GgmlType.Q5_1, 0.0414, 0.054, 0.0131)]
    [InlineData(GgmlType.Q5_0, 0.0464, 0.049, 0.0317)]
    [InlineData(GgmlType.Q5_K, 0.0399, 2.43, 0.0131)]
    [InlineData(GgmlType.Q4_1, 0.0859, 0.088, 0.0271)]
    [InlineData(GgmlType.Q4_0, 0.0947, 0.095, 0.0634)]
    [InlineData(GgmlType.Q4_K, 0.0781, 0.099, 0.0252)]
    public void RoundTrip_RelativeRmsErrorBound(GgmlType type, double bound, double tinyBound, double shiftedBound)
    {
        foreach (var (scale, shift, b) in new[] { (1.0, 0.0, bound), (1e4, 0.0, bound), (1e-5, 0.0, tinyBound), (1.0, -3.0, shiftedBound) })
        {
            var rng = new Random(7);
            int n = 8192;
            var x = new float[n];
            for (int i = 0; i < n; i++) x[i] = (float)(scale * (Gauss(rng) + shift));
            float[] y = Dequant(type, Quantize(type, x), n);
            double err = 0, norm = 0;
            for (int i = 0; i < n; i++) { err += (y[i] - x[i]) * (double)(y[i] - x[i]); norm += (double)x[i] * x[i]; }
            double rel = Math.Sqrt(err / norm);
            Assert.True(rel <= b, $"{type} scale {scale} shift {shift}: relative RMS error {rel:G4} > {b}");
        }
    }

    [Theory]
    [InlineData(GgmlType.Q4_1)]
    [InlineData(GgmlType.Q5_1)]
    [InlineData(GgmlType.Q4_K)]
    [InlineData(GgmlType.Q5_K)]
    public void NegativeOnlyRows_UseTheMin(GgmlType type)
    {
        // All values in [-5, -4]: a format with a min does much better than one scale through zero (measured max error:
        // Q4_0 0.31, Q5_0 0.16; Q4_1 0.034, Q5_1 0.017, Q4_K 0.078, Q5_K 0.046).
        var rng = new Random(3);
        var x = Enumerable.Range(0, 512).Select(_ => (float)(-4 - rng.NextDouble())).ToArray();
        float[] y = Dequant(type, Quantize(type, x), x.Length);
        double maxErr = x.Select((v, i) => Math.Abs(v - y[i])).Max();
        Assert.True(maxErr < 0.1, $"{type}: max error {maxErr}");
        float[] yNoMin = Dequant(GgmlType.Q4_0, Quantize(GgmlType.Q4_0, x), x.Length);
        Assert.True(x.Select((v, i) => Math.Abs(v - yNoMin[i])).Max() > 2 * maxErr);
    }

    private static double Gauss(Random rng) => Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());

    private static int FirstDiff(byte[] a, byte[] b)
    {
        for (int i = 0; i < a.Length; i++) if (a[i] != b[i]) return i;
        return -1;
    }
}
