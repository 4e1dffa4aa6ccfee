using System.Runtime.CompilerServices;

namespace MoeServer.Kernels.Quantization;

/// <summary>
/// The reference quantizers of ggml (<c>quantize_row_*_ref</c> in ggml-quants.c), reproduced operation for
/// operation in fp32 so that the bytes equal llama.cpp's for the same input (golden fixtures check this): the
/// rounding helpers (<c>nearest_int</c>'s magic-number trick, <c>roundf</c>, truncating casts), the evaluation order of
/// every sum and product, and the K-quant scale searches <c>make_qx_quants</c> and <c>make_qkx2_quants</c>.
/// This is what llama.cpp's quantizer runs when no importance matrix is given.
/// </summary>
public static unsafe class QuantizeReference
{
    private const float GroupMaxEps = 1e-15f;

    /// <summary>Quantizes <paramref name="x"/> (a whole number of blocks) into <paramref name="dst"/> as <paramref name="type"/>.</summary>
    public static void Quantize(GgmlType type, ReadOnlySpan<float> x, Span<byte> dst)
    {
        long bytes = GgmlTypeInfo.RowSize(type, x.Length);
        if (dst.Length < bytes)
        {
            throw new ArgumentException($"Destination holds {dst.Length} bytes; {x.Length} {type} values need {bytes}.", nameof(dst));
        }

        fixed (float* px = x)
        fixed (byte* py = dst)
        {
            Quantize(type, px, py, x.Length);
        }
    }

    /// <summary>Pointer form of <see cref="Quantize(GgmlType, ReadOnlySpan{float}, Span{byte})"/>; <paramref name="k"/> values.</summary>
    public static void Quantize(GgmlType type, float* x, byte* y, long k)
    {
        if (!GgmlTypeInfo.Fits(type, k))
        {
            throw new ArgumentException($"{type} needs a multiple of {GgmlTypeInfo.BlockSize(type)} values; got {k}.", nameof(k));
        }

        switch (type)
        {
            case GgmlType.F32:
                Buffer.MemoryCopy(x, y, k * 4, k * 4);
                break;
            case GgmlType.F16:
                for (long i = 0; i < k; i++)
                {
                    ((ushort*)y)[i] = Fp16.FromFloat(x[i]);
                }

                break;
            case GgmlType.Q4_0: Q4_0(x, y, k); break;
            case GgmlType.Q4_1: Q4_1(x, y, k); break;
            case GgmlType.Q5_0: Q5_0(x, y, k); break;
            case GgmlType.Q5_1: Q5_1(x, y, k); break;
            case GgmlType.Q8_0: Q8_0(x, y, k); break;
            case GgmlType.Q8_1: Q8_1(x, y, k); break;
            case GgmlType.Q4_K: Q4_K(x, y, k); break;
            case GgmlType.Q5_K: Q5_K(x, y, k); break;
            case GgmlType.Q6_K: Q6_K(x, y, k); break;
            case GgmlType.Q8_K: Q8_K(x, y, k); break;
            default: throw new NotSupportedException($"Quantizing to {type} is not supported.");
        }
    }

    /// <summary>ggml's <c>nearest_int</c>: round to nearest (ties to even) by adding 1.5·2^23; valid for |v| ≤ 4194303.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int NearestInt(float v)
    {
        float val = v + 12582912f;
        int i = BitConverter.SingleToInt32Bits(val);
        return (i & 0x007fffff) - 0x00400000;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PutHalf(byte* p, float v) => *(ushort*)p = Fp16.FromFloat(v);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float GetHalf(byte* p) => Fp16.ToFloat(*(ushort*)p);

    private static void Q4_0(float* x, byte* y, long k)
    {
        const int qk = 32;
        long nb = k / qk;
        for (long i = 0; i < nb; i++, x += qk, y += 18)
        {
            float amax = 0f, max = 0f;
            for (int j = 0; j < qk; j++)
            {
                float v = x[j];
                if (amax < MathF.Abs(v))
                {
                    amax = MathF.Abs(v);
                    max = v;
                }
            }

            float d = max / -8;
            float id = d != 0f ? 1.0f / d : 0.0f;
            PutHalf(y, d);
            byte* qs = y + 2;
            for (int j = 0; j < qk / 2; j++)
            {
                float x0 = x[j] * id;
                float x1 = x[(qk / 2) + j] * id;
                int xi0 = Math.Min(15, (int)(sbyte)(int)(x0 + 8.5f));
                int xi1 = Math.Min(15, (int)(sbyte)(int)(x1 + 8.5f));
                qs[j] = (byte)(xi0 | (xi1 << 4));
            }
        }
    }

    private static void Q4_1(float* x, byte* y, long k)
    {
        const int qk = 32;
        long nb = k / qk;
        for (long i = 0; i < nb; i++, x += qk, y += 20)
        {
            float min = float.MaxValue, max = -float.MaxValue;
            for (int j = 0; j < qk; j++)
            {
                float v = x[j];
                if (v < min)
                {
                    min = v;
                }

                if (v > max)
                {
                    max = v;
                }
            }

            float d = (max - min) / ((1 << 4) - 1);
            float id = d != 0f ? 1.0f / d : 0.0f;
            PutHalf(y, d);
            PutHalf(y + 2, min);
            byte* qs = y + 4;
            for (int j = 0; j < qk / 2; j++)
            {
                float x0 = (x[j] - min) * id;
                float x1 = (x[(qk / 2) + j] - min) * id;
                int xi0 = Math.Min(15, (int)(sbyte)(int)(x0 + 0.5f));
                int xi1 = Math.Min(15, (int)(sbyte)(int)(x1 + 0.5f));
                qs[j] = (byte)(xi0 | (xi1 << 4));
            }
        }
    }

    private static void Q5_0(float* x, byte* y, long k)
    {
        const int qk = 32;
        long nb = k / qk;
        for (long i = 0; i < nb; i++, x += qk, y += 22)
        {
            float amax = 0f, max = 0f;
            for (int j = 0; j < qk; j++)
            {
                float v = x[j];
                if (amax < MathF.Abs(v))
                {
                    amax = MathF.Abs(v);
                    max = v;
                }
            }

            float d = max / -16;
            float id = d != 0f ? 1.0f / d : 0.0f;
            PutHalf(y, d);
            uint qh = 0;
            byte* qs = y + 6;
            for (int j = 0; j < qk / 2; j++)
            {
                float x0 = x[j] * id;
                float x1 = x[(qk / 2) + j] * id;
                uint xi0 = (byte)Math.Min(31, (int)(sbyte)(int)(x0 + 16.5f));
                uint xi1 = (byte)Math.Min(31, (int)(sbyte)(int)(x1 + 16.5f));
                qs[j] = (byte)((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
                qh |= ((xi0 & 0x10u) >> 4) << j;
                qh |= ((xi1 & 0x10u) >> 4) << (j + (qk / 2));
            }

            *(uint*)(y + 2) = qh;
        }
    }

    private static void Q5_1(float* x, byte* y, long k)
    {
        const int qk = 32;
        long nb = k / qk;
        for (long i = 0; i < nb; i++, x += qk, y += 24)
        {
            float min = float.MaxValue, max = -float.MaxValue;
            for (int j = 0; j < qk; j++)
            {
                float v = x[j];
                if (v < min)
                {
                    min = v;
                }

                if (v > max)
                {
                    max = v;
                }
            }

            float d = (max - min) / ((1 << 5) - 1);
            float id = d != 0f ? 1.0f / d : 0.0f;
            PutHalf(y, d);
            PutHalf(y + 2, min);
            uint qh = 0;
            byte* qs = y + 8;
            for (int j = 0; j < qk / 2; j++)
            {
                float x0 = (x[j] - min) * id;
                float x1 = (x[(qk / 2) + j] - min) * id;
                uint xi0 = (byte)(int)(x0 + 0.5f);
                uint xi1 = (byte)(int)(x1 + 0.5f);
                qs[j] = (byte)((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
                qh |= ((xi0 & 0x10u) >> 4) << j;
                qh |= ((xi1 & 0x10u) >> 4) << (j + (qk / 2));
            }

            *(uint*)(y + 4) = qh;
        }
    }

    private static void Q8_0(float* x, byte* y, long k)
    {
        const int qk = 32;
        long nb = k / qk;
        for (long i = 0; i < nb; i++, x += qk, y += 34)
        {
            float amax = 0f;
            for (int j = 0; j < qk; j++)
            {
                amax = MaxC(amax, MathF.Abs(x[j]));
            }

            float d = amax / ((1 << 7) - 1);
            float id = d != 0f ? 1.0f / d : 0.0f;
            PutHalf(y, d);
            sbyte* qs = (sbyte*)(y + 2);
            for (int j = 0; j < qk; j++)
            {
                qs[j] = (sbyte)MathF.Round(x[j] * id, MidpointRounding.AwayFromZero);
            }
        }
    }

    private static void Q8_1(float* x, byte* y, long k)
    {
        const int qk = 32;
        long nb = k / qk;
        for (long i = 0; i < nb; i++, x += qk, y += 36)
        {
            float amax = 0f;
            for (int j = 0; j < qk; j++)
            {
                amax = MaxC(amax, MathF.Abs(x[j]));
            }

            float d = amax / ((1 << 7) - 1);
            float id = d != 0f ? 1.0f / d : 0.0f;
            PutHalf(y, d);
            sbyte* qs = (sbyte*)(y + 4);
            int sum = 0;
            for (int j = 0; j < qk / 2; j++)
            {
                qs[j] = (sbyte)MathF.Round(x[j] * id, MidpointRounding.AwayFromZero);
                qs[(qk / 2) + j] = (sbyte)MathF.Round(x[(qk / 2) + j] * id, MidpointRounding.AwayFromZero);
                sum += qs[j];
                sum += qs[(qk / 2) + j];
            }

            PutHalf(y + 2, sum * d);
        }
    }

    /// <summary>C's <c>MAX(a, b)</c> macro: <c>a &gt; b ? a : b</c>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float MaxC(float a, float b) => a > b ? a : b;

    /// <summary>
    /// ggml's <c>make_qx_quants</c> (signed levels −nmax..nmax−1 stored as L + nmax) without importance weights:
    /// rmse_type 1 weighs each value by x², then tries 18 nearby scales and keeps the best weighted fit.
    /// </summary>
    internal static float MakeQxQuants(int n, int nmax, float* x, sbyte* L, int rmseType)
    {
        float max = 0, amax = 0;
        for (int i = 0; i < n; i++)
        {
            float ax = MathF.Abs(x[i]);
            if (ax > amax)
            {
                amax = ax;
                max = x[i];
            }
        }

        if (amax < GroupMaxEps)
        {
            for (int i = 0; i < n; i++)
            {
                L[i] = 0;
            }

            return 0f;
        }

        float iscale = -nmax / max;
        if (rmseType == 0)
        {
            for (int i = 0; i < n; i++)
            {
                int l = NearestInt(iscale * x[i]);
                L[i] = (sbyte)(nmax + Math.Max(-nmax, Math.Min(nmax - 1, l)));
            }

            return 1 / iscale;
        }

        bool returnEarly = false;
        if (rmseType < 0)
        {
            rmseType = -rmseType;
            returnEarly = true;
        }

        float sumlx = 0, suml2 = 0;
        for (int i = 0; i < n; i++)
        {
            int l = NearestInt(iscale * x[i]);
            l = Math.Max(-nmax, Math.Min(nmax - 1, l));
            L[i] = (sbyte)(l + nmax);
            float w = Weight(rmseType, x[i]);
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }

        float scale = suml2 != 0f ? sumlx / suml2 : 0.0f;
        if (returnEarly)
        {
            return suml2 > 0 ? 0.5f * (scale + (1 / iscale)) : 1 / iscale;
        }

        float best = scale * sumlx;
        for (int @is = -9; @is <= 9; @is++)
        {
            if (@is == 0)
            {
                continue;
            }

            iscale = -(nmax + (0.1f * @is)) / max;
            sumlx = suml2 = 0;
            for (int i = 0; i < n; i++)
            {
                int l = NearestInt(iscale * x[i]);
                l = Math.Max(-nmax, Math.Min(nmax - 1, l));
                float w = Weight(rmseType, x[i]);
                sumlx += w * x[i] * l;
                suml2 += w * l * l;
            }

            if (suml2 > 0 && sumlx * sumlx > best * suml2)
            {
                for (int i = 0; i < n; i++)
                {
                    int l = NearestInt(iscale * x[i]);
                    L[i] = (sbyte)(nmax + Math.Max(-nmax, Math.Min(nmax - 1, l)));
                }

                scale = sumlx / suml2;
                best = scale * sumlx;
            }
        }

        return scale;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Weight(int rmseType, float x) => rmseType switch
    {
        1 => x * x,
        2 => 1,
        3 => MathF.Abs(x),
        _ => MathF.Sqrt(MathF.Abs(x)),
    };

    /// <summary>
    /// ggml's <c>make_qkx2_quants</c>: levels 0..nmax with a scale and a (non-positive) min, fitted by weighted least
    /// squares over nstep+1 trial scales; returns the scale and writes −min to <paramref name="theMin"/>.
    /// </summary>
    internal static float MakeQkx2Quants(int n, int nmax, float* x, float* weights, byte* L, float* theMin, byte* Laux, float rmin, float rdelta, int nstep, bool useMad)
    {
        float min = x[0];
        float max = x[0];
        float sumW = weights[0];
        float sumX = sumW * x[0];
        for (int i = 1; i < n; i++)
        {
            if (x[i] < min)
            {
                min = x[i];
            }

            if (x[i] > max)
            {
                max = x[i];
            }

            float w = weights[i];
            sumW += w;
            sumX += w * x[i];
        }

        if (min > 0)
        {
            min = 0;
        }

        if (max == min)
        {
            for (int i = 0; i < n; i++)
            {
                L[i] = 0;
            }

            *theMin = -min;
            return 0f;
        }

        float iscale = nmax / (max - min);
        float scale = 1 / iscale;
        float bestError = 0;
        for (int i = 0; i < n; i++)
        {
            int l = NearestInt(iscale * (x[i] - min));
            L[i] = (byte)Math.Max(0, Math.Min(nmax, l));
            float diff = (scale * L[i]) + min - x[i];
            diff = useMad ? MathF.Abs(diff) : diff * diff;
            bestError += weights[i] * diff;
        }

        if (nstep < 1)
        {
            *theMin = -min;
            return scale;
        }

        for (int @is = 0; @is <= nstep; @is++)
        {
            iscale = (rmin + (rdelta * @is) + nmax) / (max - min);
            float sumL = 0, sumL2 = 0, sumXl = 0;
            for (int i = 0; i < n; i++)
            {
                int l = NearestInt(iscale * (x[i] - min));
                l = Math.Max(0, Math.Min(nmax, l));
                Laux[i] = (byte)l;
                float w = weights[i];
                sumL += w * l;
                sumL2 += w * l * l;
                sumXl += w * l * x[i];
            }

            float D = (sumW * sumL2) - (sumL * sumL);
            if (D > 0)
            {
                float thisScale = ((sumW * sumXl) - (sumX * sumL)) / D;
                float thisMin = ((sumL2 * sumX) - (sumL * sumXl)) / D;
                if (thisMin > 0)
                {
                    thisMin = 0;
                    thisScale = sumXl / sumL2;
                }

                float curError = 0;
                for (int i = 0; i < n; i++)
                {
                    float diff = (thisScale * Laux[i]) + thisMin - x[i];
                    diff = useMad ? MathF.Abs(diff) : diff * diff;
                    curError += weights[i] * diff;
                }

                if (curError < bestError)
                {
                    for (int i = 0; i < n; i++)
                    {
                        L[i] = Laux[i];
                    }

                    bestError = curError;
                    scale = thisScale;
                    min = thisMin;
                }
            }
        }

        *theMin = -min;
        return scale;
    }

    /// <summary>ggml's <c>get_scale_min_k4</c>: the 6-bit scale and min of sub-block j from the 12 packed bytes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void GetScaleMinK4(int j, byte* q, out int d, out int m)
    {
        if (j < 4)
        {
            d = q[j] & 63;
            m = q[j + 4] & 63;
        }
        else
        {
            d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
            m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
        }
    }

    /// <summary>Q4_K and Q5_K share everything but the level count and the quant packing.</summary>
    private static void Q4Q5K(float* x, byte* y, long k, bool five)
    {
        const int qkk = GgmlTypeInfo.QK_K;
        int nmax = five ? 31 : 15;
        float rmin = five ? -0.5f : -1f;
        int nstep = five ? 15 : 20;
        int blockBytes = five ? 176 : 144;
        long nb = k / qkk;
        byte* L = stackalloc byte[qkk];
        byte* laux = stackalloc byte[32];
        float* weights = stackalloc float[32];
        float* mins = stackalloc float[qkk / 32];
        float* scales = stackalloc float[qkk / 32];
        for (long i = 0; i < nb; i++, x += qkk, y += blockBytes)
        {
            float maxScale = 0, maxMin = 0;
            for (int j = 0; j < qkk / 32; j++)
            {
                float sumX2 = 0;
                for (int l = 0; l < 32; l++)
                {
                    sumX2 += x[(32 * j) + l] * x[(32 * j) + l];
                }

                float avX = MathF.Sqrt(sumX2 / 32);
                for (int l = 0; l < 32; l++)
                {
                    weights[l] = avX + MathF.Abs(x[(32 * j) + l]);
                }

                scales[j] = MakeQkx2Quants(32, nmax, x + (32 * j), weights, L + (32 * j), &mins[j], laux, rmin, 0.1f, nstep, false);
                if (scales[j] > maxScale)
                {
                    maxScale = scales[j];
                }

                if (mins[j] > maxMin)
                {
                    maxMin = mins[j];
                }
            }

            byte* sc = y + 4;
            new Span<byte>(sc, 12).Clear();
            float invScale = maxScale > 0 ? 63f / maxScale : 0f;
            float invMin = maxMin > 0 ? 63f / maxMin : 0f;
            for (int j = 0; j < qkk / 32; j++)
            {
                byte ls = (byte)NearestInt(invScale * scales[j]);
                byte lm = (byte)NearestInt(invMin * mins[j]);
                ls = Math.Min((byte)63, ls);
                lm = Math.Min((byte)63, lm);
                if (j < 4)
                {
                    sc[j] = ls;
                    sc[j + 4] = lm;
                }
                else
                {
                    sc[j + 4] = (byte)((ls & 0xF) | ((lm & 0xF) << 4));
                    sc[j - 4] |= (byte)((ls >> 4) << 6);
                    sc[j] |= (byte)((lm >> 4) << 6);
                }
            }

            PutHalf(y, maxScale / 63f);
            PutHalf(y + 2, maxMin / 63f);
            float dAll = GetHalf(y), dminAll = GetHalf(y + 2);
            for (int j = 0; j < qkk / 32; j++)
            {
                GetScaleMinK4(j, sc, out int s, out int m);
                float d = dAll * s;
                if (d == 0f)
                {
                    continue;
                }

                float dm = dminAll * m;
                for (int ii = 0; ii < 32; ii++)
                {
                    int l = NearestInt((x[(32 * j) + ii] + dm) / d);
                    L[(32 * j) + ii] = (byte)Math.Max(0, Math.Min(nmax, l));
                }
            }

            if (!five)
            {
                byte* q = y + 16;
                for (int j = 0; j < qkk; j += 64, q += 32)
                {
                    for (int l = 0; l < 32; l++)
                    {
                        q[l] = (byte)(L[j + l] | (L[j + l + 32] << 4));
                    }
                }
            }
            else
            {
                byte* qh = y + 16;
                byte* ql = y + 48;
                new Span<byte>(qh, 32).Clear();
                byte m1 = 1, m2 = 2;
                for (int n = 0; n < qkk; n += 64, ql += 32)
                {
                    for (int j = 0; j < 32; j++)
                    {
                        int l1 = L[n + j];
                        if (l1 > 15)
                        {
                            l1 -= 16;
                            qh[j] |= m1;
                        }

                        int l2 = L[n + j + 32];
                        if (l2 > 15)
                        {
                            l2 -= 16;
                            qh[j] |= m2;
                        }

                        ql[j] = (byte)(l1 | (l2 << 4));
                    }

                    m1 <<= 2;
                    m2 <<= 2;
                }
            }
        }
    }

    private static void Q4_K(float* x, byte* y, long k) => Q4Q5K(x, y, k, five: false);

    private static void Q5_K(float* x, byte* y, long k) => Q4Q5K(x, y, k, five: true);

    private static void Q6_K(float* x, byte* y, long k)
    {
        const int qkk = GgmlTypeInfo.QK_K;
        long nb = k / qkk;
        sbyte* L = stackalloc sbyte[qkk];
        float* scales = stackalloc float[qkk / 16];
        for (long i = 0; i < nb; i++, x += qkk, y += 210)
        {
            float maxScale = 0, maxAbsScale = 0;
            for (int ib = 0; ib < qkk / 16; ib++)
            {
                float scale = MakeQxQuants(16, 32, x + (16 * ib), L + (16 * ib), 1);
                scales[ib] = scale;
                float abs = MathF.Abs(scale);
                if (abs > maxAbsScale)
                {
                    maxAbsScale = abs;
                    maxScale = scale;
                }
            }

            if (maxAbsScale < GroupMaxEps)
            {
                new Span<byte>(y, 210).Clear();
                PutHalf(y + 208, 0f);
                continue;
            }

            float iscale = -128f / maxScale;
            PutHalf(y + 208, 1 / iscale);
            sbyte* sc = (sbyte*)(y + 192);
            for (int ib = 0; ib < qkk / 16; ib++)
            {
                sc[ib] = (sbyte)Math.Min(127, NearestInt(iscale * scales[ib]));
            }

            float dAll = GetHalf(y + 208);
            for (int j = 0; j < qkk / 16; j++)
            {
                float d = dAll * sc[j];
                if (d == 0f)
                {
                    continue;
                }

                for (int ii = 0; ii < 16; ii++)
                {
                    int l = NearestInt(x[(16 * j) + ii] / d);
                    l = Math.Max(-32, Math.Min(31, l));
                    L[(16 * j) + ii] = (sbyte)(l + 32);
                }
            }

            byte* ql = y;
            byte* qh = y + 128;
            for (int j = 0; j < qkk; j += 128, ql += 64, qh += 32)
            {
                for (int l = 0; l < 32; l++)
                {
                    int q1 = L[j + l] & 0xF;
                    int q2 = L[j + l + 32] & 0xF;
                    int q3 = L[j + l + 64] & 0xF;
                    int q4 = L[j + l + 96] & 0xF;
                    ql[l] = (byte)(q1 | (q3 << 4));
                    ql[l + 32] = (byte)(q2 | (q4 << 4));
                    qh[l] = (byte)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6));
                }
            }
        }
    }

    private static void Q8_K(float* x, byte* y, long k)
    {
        const int qkk = GgmlTypeInfo.QK_K;
        long nb = k / qkk;
        for (long i = 0; i < nb; i++, x += qkk, y += 292)
        {
            float max = 0, amax = 0;
            for (int j = 0; j < qkk; j++)
            {
                float ax = MathF.Abs(x[j]);
                if (ax > amax)
                {
                    amax = ax;
                    max = x[j];
                }
            }

            sbyte* qs = (sbyte*)(y + 4);
            short* bsums = (short*)(y + 260);
            if (amax == 0f)
            {
                *(float*)y = 0;
                new Span<byte>(qs, qkk).Clear();

                // ggml leaves bsums untouched here; zero them so the block is deterministic (they sum zeros anyway).
                new Span<byte>(bsums, 32).Clear();
                continue;
            }

            float iscale = -127f / max;
            for (int j = 0; j < qkk; j++)
            {
                int v = NearestInt(iscale * x[j]);
                qs[j] = (sbyte)Math.Min(127, v);
            }

            for (int j = 0; j < qkk / 16; j++)
            {
                int sum = 0;
                for (int ii = 0; ii < 16; ii++)
                {
                    sum += qs[(j * 16) + ii];
                }

                bsums[j] = (short)sum;
            }

            *(float*)y = 1 / iscale;
        }
    }
}
