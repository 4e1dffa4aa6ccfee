namespace MoeServer.Kernels.Tests.Quantization;

/// <summary>
/// Float64 dequantization written from the block-format descriptions (ggml-common.h's struct comments and the
/// GGUF spec's type table), element by element: for element e of a block, which byte and which bits hold its quant,
/// which scale and min apply. Independent of the production code's loop structure.
/// </summary>
public static class ReferenceDequant
{
    public static double Half(byte[] b, int o) => (double)BitConverter.UInt16BitsToHalf(BitConverter.ToUInt16(b, o));

    public static (int Block, int Bytes) Geometry(string type) => type switch
    {
        "f16" => (1, 2), "q4_0" => (32, 18), "q4_1" => (32, 20), "q5_0" => (32, 22), "q5_1" => (32, 24), "q8_0" => (32, 34), "q8_1" => (32, 36),
        "q4_K" => (256, 144), "q5_K" => (256, 176), "q6_K" => (256, 210), "q8_K" => (256, 292),
        _ => throw new ArgumentException(type),
    };

    /// <summary>All values of a row of <paramref name="n"/> elements.</summary>
    public static double[] Row(string type, byte[] data, int offset, int n)
    {
        var (block, bytes) = Geometry(type);
        var y = new double[n];
        for (int i = 0; i < n; i++)
        {
            y[i] = Element(type, data, offset + (i / block * bytes), i % block);
        }

        return y;
    }

    /// <summary>Element <paramref name="e"/> of the block starting at <paramref name="o"/>.</summary>
    public static double Element(string type, byte[] b, int o, int e)
    {
        switch (type)
        {
            case "f16":
                return Half(b, o);
            case "q4_0":
            {
                // d (fp16), then qs[16]: element j in the low nibble of qs[j], element 16 + j in the high nibble.
                int q = Nibble(b[o + 2 + (e % 16)], e >= 16);
                return Half(b, o) * (q - 8);
            }

            case "q4_1":
            {
                int q = Nibble(b[o + 4 + (e % 16)], e >= 16);
                return (Half(b, o) * q) + Half(b, o + 2);
            }

            case "q5_0":
            {
                // d, qh (32 bits: bit e is element e's fifth bit), qs[16] as in q4_0.
                uint qh = BitConverter.ToUInt32(b, o + 2);
                int q = Nibble(b[o + 6 + (e % 16)], e >= 16) | (int)(((qh >> e) & 1) << 4);
                return Half(b, o) * (q - 16);
            }

            case "q5_1":
            {
                uint qh = BitConverter.ToUInt32(b, o + 4);
                int q = Nibble(b[o + 8 + (e % 16)], e >= 16) | (int)(((qh >> e) & 1) << 4);
                return (Half(b, o) * q) + Half(b, o + 2);
            }

            case "q8_0":
                return Half(b, o) * (sbyte)b[o + 2 + e];
            case "q8_1":
                return Half(b, o) * (sbyte)b[o + 4 + e];
            case "q8_K":
                return BitConverter.ToSingle(b, o) * (double)(sbyte)b[o + 4 + e];
            case "q4_K":
            case "q5_K":
            {
                // d, dmin, scales[12] (8 six-bit scales and 8 six-bit mins), [qh[32] for q5_K], qs[128].
                // Sub-block s = e / 32; pairs of sub-blocks share 32 bytes of qs: even s low nibbles, odd s high.
                int s = e / 32;
                int scBase = o + 4;
                int sc, mn;
                if (s < 4)
                {
                    sc = b[scBase + s] & 63;
                    mn = b[scBase + s + 4] & 63;
                }
                else
                {
                    sc = (b[scBase + s + 4] & 15) | ((b[scBase + s - 4] >> 6) << 4);
                    mn = (b[scBase + s + 4] >> 4) | ((b[scBase + s] >> 6) << 4);
                }

                bool five = type == "q5_K";
                int qsBase = o + (five ? 48 : 16);
                int q = Nibble(b[qsBase + (32 * (s / 2)) + (e % 32)], s % 2 == 1);
                if (five)
                {
                    // qh[l] bit s is the fifth bit of element l of sub-block s.
                    q |= ((b[o + 16 + (e % 32)] >> s) & 1) << 4;
                }

                return (Half(b, o) * sc * q) - (Half(b, o + 2) * mn);
            }

            case "q6_K":
            {
                // ql[128], qh[64], scales[16] (int8, one per 16 elements), d. Halves of 128 elements; in a half,
                // quarter g = 0..3 of 32: low 4 bits in ql[l] (g = 0, 2) or ql[32 + l] (g = 1, 3), low nibble for
                // g < 2 and high for g >= 2; bits 4-5 in qh[l] at bit 2g.
                int h = e / 128, g = (e % 128) / 32, l = e % 32;
                int lowByte = b[o + (64 * h) + (g % 2 == 0 ? 0 : 32) + l];
                int low = Nibble((byte)lowByte, g >= 2);
                int high = (b[o + 128 + (32 * h) + l] >> (2 * g)) & 3;
                int q = (low | (high << 4)) - 32;
                int scale = (sbyte)b[o + 192 + (8 * h) + (l / 16) + (2 * g)];
                return Half(b, o + 208) * scale * q;
            }

            default:
                throw new ArgumentException(type);
        }
    }

    private static int Nibble(byte v, bool high) => high ? v >> 4 : v & 15;
}
