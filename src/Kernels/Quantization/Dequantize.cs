namespace MoeServer.Kernels.Quantization;

/// <summary>
/// Block formats back to fp32, with ggml's arithmetic (<c>dequantize_row_*</c> in ggml-quants.c: the same products in
/// the same order), so the floats equal llama.cpp's bit for bit.
/// </summary>
public static unsafe class Dequantize
{
    /// <summary>Dequantizes <paramref name="k"/> = <paramref name="y"/>.Length values of <paramref name="type"/> from <paramref name="src"/>.</summary>
    public static void Row(GgmlType type, ReadOnlySpan<byte> src, Span<float> y)
    {
        long bytes = GgmlTypeInfo.RowSize(type, y.Length);
        if (src.Length < bytes)
        {
            throw new ArgumentException($"Source holds {src.Length} bytes; {y.Length} {type} values need {bytes}.", nameof(src));
        }

        fixed (byte* px = src)
        fixed (float* py = y)
        {
            Row(type, px, py, y.Length);
        }
    }

    /// <summary>Pointer form of <see cref="Row(GgmlType, ReadOnlySpan{byte}, Span{float})"/>.</summary>
    public static void Row(GgmlType type, byte* x, float* y, long k)
    {
        if (!GgmlTypeInfo.Fits(type, k))
        {
            throw new ArgumentException($"{type} needs a multiple of {GgmlTypeInfo.BlockSize(type)} values; got {k}.", nameof(k));
        }

        long nb = k / GgmlTypeInfo.BlockSize(type);
        int bs = GgmlTypeInfo.TypeSize(type);
        for (long i = 0; i < nb; i++)
        {
            byte* b = x + (i * bs);
            switch (type)
            {
                case GgmlType.F32: y[i] = *(float*)b; break;
                case GgmlType.F16: y[i] = H(b); break;
                case GgmlType.Q4_0: Q4_0(b, y + (i * 32)); break;
                case GgmlType.Q4_1: Q4_1(b, y + (i * 32)); break;
                case GgmlType.Q5_0: Q5_0(b, y + (i * 32)); break;
                case GgmlType.Q5_1: Q5_1(b, y + (i * 32)); break;
                case GgmlType.Q8_0: Q8_0(b, y + (i * 32)); break;
                case GgmlType.Q8_1: Q8_1(b, y + (i * 32)); break;
                case GgmlType.Q4_K: Q4_K(b, y + (i * 256)); break;
                case GgmlType.Q5_K: Q5_K(b, y + (i * 256)); break;
                case GgmlType.Q6_K: Q6_K(b, y + (i * 256)); break;
                case GgmlType.Q8_K: Q8_K(b, y + (i * 256)); break;
                default: throw new NotSupportedException($"Dequantizing {type} is not supported.");
            }
        }
    }

    private static float H(byte* p) => Fp16.ToFloat(*(ushort*)p);

    private static void Q4_0(byte* b, float* y)
    {
        float d = H(b);
        byte* qs = b + 2;
        for (int j = 0; j < 16; j++)
        {
            y[j] = ((qs[j] & 0x0F) - 8) * d;
            y[j + 16] = ((qs[j] >> 4) - 8) * d;
        }
    }

    private static void Q4_1(byte* b, float* y)
    {
        float d = H(b), m = H(b + 2);
        byte* qs = b + 4;
        for (int j = 0; j < 16; j++)
        {
            y[j] = ((qs[j] & 0x0F) * d) + m;
            y[j + 16] = ((qs[j] >> 4) * d) + m;
        }
    }

    private static void Q5_0(byte* b, float* y)
    {
        float d = H(b);
        uint qh = *(uint*)(b + 2);
        byte* qs = b + 6;
        for (int j = 0; j < 16; j++)
        {
            int xh0 = (int)(((qh >> j) << 4) & 0x10);
            int xh1 = (int)((qh >> (j + 12)) & 0x10);
            y[j] = (((qs[j] & 0x0F) | xh0) - 16) * d;
            y[j + 16] = (((qs[j] >> 4) | xh1) - 16) * d;
        }
    }

    private static void Q5_1(byte* b, float* y)
    {
        float d = H(b), m = H(b + 2);
        uint qh = *(uint*)(b + 4);
        byte* qs = b + 8;
        for (int j = 0; j < 16; j++)
        {
            int xh0 = (int)(((qh >> j) << 4) & 0x10);
            int xh1 = (int)((qh >> (j + 12)) & 0x10);
            y[j] = (((qs[j] & 0x0F) | xh0) * d) + m;
            y[j + 16] = (((qs[j] >> 4) | xh1) * d) + m;
        }
    }

    private static void Q8_0(byte* b, float* y)
    {
        float d = H(b);
        sbyte* qs = (sbyte*)(b + 2);
        for (int j = 0; j < 32; j++)
        {
            y[j] = qs[j] * d;
        }
    }

    private static void Q8_1(byte* b, float* y)
    {
        float d = H(b);
        sbyte* qs = (sbyte*)(b + 4);
        for (int j = 0; j < 32; j++)
        {
            y[j] = qs[j] * d;
        }
    }

    private static void Q4_K(byte* b, float* y)
    {
        float d = H(b), min = H(b + 2);
        byte* sc = b + 4;
        byte* q = b + 16;
        for (int j = 0, @is = 0; j < 256; j += 64, q += 32, @is += 2)
        {
            QuantizeReference.GetScaleMinK4(@is, sc, out int s1, out int m1i);
            float d1 = d * s1, m1 = min * m1i;
            QuantizeReference.GetScaleMinK4(@is + 1, sc, out int s2, out int m2i);
            float d2 = d * s2, m2 = min * m2i;
            for (int l = 0; l < 32; l++)
            {
                *y++ = (d1 * (q[l] & 0xF)) - m1;
            }

            for (int l = 0; l < 32; l++)
            {
                *y++ = (d2 * (q[l] >> 4)) - m2;
            }
        }
    }

    private static void Q5_K(byte* b, float* y)
    {
        float d = H(b), min = H(b + 2);
        byte* sc = b + 4;
        byte* qh = b + 16;
        byte* ql = b + 48;
        int u1 = 1, u2 = 2;
        for (int j = 0, @is = 0; j < 256; j += 64, ql += 32, @is += 2, u1 <<= 2, u2 <<= 2)
        {
            QuantizeReference.GetScaleMinK4(@is, sc, out int s1, out int m1i);
            float d1 = d * s1, m1 = min * m1i;
            QuantizeReference.GetScaleMinK4(@is + 1, sc, out int s2, out int m2i);
            float d2 = d * s2, m2 = min * m2i;
            for (int l = 0; l < 32; l++)
            {
                *y++ = (d1 * ((ql[l] & 0xF) + ((qh[l] & u1) != 0 ? 16 : 0))) - m1;
            }

            for (int l = 0; l < 32; l++)
            {
                *y++ = (d2 * ((ql[l] >> 4) + ((qh[l] & u2) != 0 ? 16 : 0))) - m2;
            }
        }
    }

    private static void Q6_K(byte* b, float* y)
    {
        float d = H(b + 208);
        byte* ql = b;
        byte* qh = b + 128;
        sbyte* sc = (sbyte*)(b + 192);
        for (int n = 0; n < 256; n += 128, y += 128, ql += 64, qh += 32, sc += 8)
        {
            for (int l = 0; l < 32; l++)
            {
                int @is = l / 16;
                int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l] = d * sc[@is] * q1;
                y[l + 32] = d * sc[@is + 2] * q2;
                y[l + 64] = d * sc[@is + 4] * q3;
                y[l + 96] = d * sc[@is + 6] * q4;
            }
        }
    }

    private static void Q8_K(byte* b, float* y)
    {
        float d = *(float*)b;
        sbyte* qs = (sbyte*)(b + 4);
        for (int j = 0; j < 256; j++)
        {
            y[j] = d * qs[j];
        }
    }
}
