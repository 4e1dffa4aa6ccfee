using MoeServer.Kernels.Native;

namespace MoeServer.Kernels.Tests.Native;

public class Bf16ConvertTests
{
    // (fp32 bits, expected bf16 bits)
    private static readonly (uint F32, ushort Bf16)[] Known =
    {
        (0x3F80_0000, 0x3F80), // 1.0
        (0xBF80_0000, 0xBF80), // -1.0
        (0x3F80_7FFF, 0x3F80), // just below half: down
        (0x3F80_8000, 0x3F80), // tie, even lsb: stays
        (0x3F81_8000, 0x3F82), // tie, odd lsb: up to even
        (0x3F80_8001, 0x3F81), // just above half: up
        (0xBF81_8000, 0xBF82), // negative tie, odd lsb
        (0x0000_0000, 0x0000), // +0
        (0x8000_0000, 0x8000), // -0
        (0x0000_0001, 0x0000), // smallest subnormal rounds to 0
        (0x0000_8000, 0x0000), // subnormal tie, even
        (0x0001_8000, 0x0002), // subnormal tie, odd
        (0x007F_FFFF, 0x0080), // largest subnormal rounds up to smallest normal
        (0x7F7F_7FFF, 0x7F7F), // large finite, rounds down
        (0x7F7F_FFFF, 0x7F80), // float.MaxValue rounds to +inf
        (0xFF7F_FFFF, 0xFF80), // -float.MaxValue rounds to -inf
        (0x7F80_0000, 0x7F80), // +inf
        (0xFF80_0000, 0xFF80), // -inf
        (0x7FC0_0000, 0x7FC0), // quiet NaN
        (0xFFC0_0000, 0xFFC0), // negative quiet NaN
        (0x7F80_0001, 0x7FC0), // signalling NaN, payload only in the dropped bits: must stay NaN
        (0xFF80_0001, 0xFFC0),
        (0x7FBF_FFFF, 0x7FFF), // NaN that would carry into the exponent if rounded
    };

    [Fact]
    public void Scalar_rounds_to_nearest_even()
    {
        foreach ((uint f, ushort b) in Known)
        {
            Assert.True(b == Bf16Convert.ToBf16(BitConverter.UInt32BitsToSingle(f)), $"0x{f:X8} -> 0x{Bf16Convert.ToBf16(BitConverter.UInt32BitsToSingle(f)):X4}, expected 0x{b:X4}");
        }
    }

    [Fact]
    public void Span_conversion_matches_known_patterns_in_vector_and_tail_positions()
    {
        // 100 copies at shifting offsets: every pattern lands in vector lanes and in the scalar tail.
        int len = Known.Length * 100 + 7;
        float[] src = new float[len];
        ushort[] expected = new ushort[len];
        for (int i = 0; i < len; i++)
        {
            (uint f, ushort b) = Known[(i * 7) % Known.Length];
            src[i] = BitConverter.UInt32BitsToSingle(f);
            expected[i] = b;
        }

        ushort[] dst = new ushort[len];
        Bf16Convert.ToBf16(src, dst);
        Assert.Equal(expected, dst);
    }

    [Fact]
    public void Span_conversion_matches_scalar_on_random_bits_and_widening_is_exact()
    {
        var rng = new Random(42);
        int len = 10007;
        float[] src = new float[len];
        for (int i = 0; i < len; i++)
        {
            src[i] = BitConverter.UInt32BitsToSingle((uint)rng.NextInt64(0, 1L << 32));
        }

        ushort[] dst = new ushort[len];
        Bf16Convert.ToBf16(src, dst);
        for (int i = 0; i < len; i++)
        {
            Assert.Equal(Bf16Convert.ToBf16(src[i]), dst[i]);
        }

        float[] back = new float[len];
        Bf16Convert.ToSingle(dst, back);
        for (int i = 0; i < len; i++)
        {
            Assert.Equal((uint)dst[i] << 16, BitConverter.SingleToUInt32Bits(back[i]));
        }
    }

    [Fact]
    public void Rounding_error_is_at_most_half_an_ulp()
    {
        var rng = new Random(3);
        for (int i = 0; i < 10000; i++)
        {
            float v = (float)((rng.NextDouble() - 0.5) * Math.Pow(2, rng.Next(-60, 60)));
            float r = Bf16Convert.ToSingle(Bf16Convert.ToBf16(v));
            float ulp = MathF.Abs(BitConverter.UInt32BitsToSingle((BitConverter.SingleToUInt32Bits(MathF.Abs(r)) & 0x7F80_0000u)) * (1f / 128));
            Assert.True(MathF.Abs(r - v) <= (ulp / 2) + float.Epsilon, $"{v} -> {r}");
        }
    }
}
