using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace MoeServer.Kernels.Quantization;

/// <summary>How activations are quantized for a weight type's integer dot product.</summary>
public enum ActivationKind
{
    /// <summary>fp32 (F16 weights).</summary>
    Float = 0,

    /// <summary>8-bit per block of 32 with an fp32 scale and the block's quant sum (ggml's Q8_0 / Q8_1).</summary>
    Q8Block32 = 1,

    /// <summary>8-bit per super-block of 256 with an fp32 scale and sums of every 16 (ggml's Q8_K).</summary>
    Q8K = 2,
}

/// <summary>
/// Activation rows quantized to 8 bits as llama.cpp does before an integer dot product, in a layout made for the
/// kernels: per row the int8 quants (contiguous), the block scales and the block sums.
/// </summary>
/// <remarks>
/// <para><see cref="ActivationKind.Q8Block32"/> is ggml's Q8_0 (<c>d = amax/127</c>, <c>q = round(x/d)</c> half away from
/// zero) with d kept in fp32 instead of fp16 and Σq precomputed (ggml's Q8_1 stores d·Σq in fp16 for the same purpose).
/// <see cref="ActivationKind.Q8K"/> is ggml's Q8_K exactly (<c>quantize_row_q8_K_ref</c>: scale −127/max, nearest_int,
/// clamp to 127, sums of 16).</para>
/// </remarks>
public sealed unsafe class Q8Activations
{
    private byte[] _buffer = Array.Empty<byte>();
    private byte* _base;

    /// <summary>Kind of the current contents.</summary>
    public ActivationKind Kind { get; private set; }

    /// <summary>Rows.</summary>
    public int M { get; private set; }

    /// <summary>Values per row.</summary>
    public int K { get; private set; }

    /// <summary>Bytes between rows of <see cref="Q"/> (K rounded up to 64).</summary>
    public int QStride { get; private set; }

    /// <summary>Quants, [M, QStride]; row r at Q + r·QStride.</summary>
    public sbyte* Q { get; private set; }

    /// <summary>Scales: per block of 32 (Q8Block32) or per super-block of 256 (Q8K); [M, ScaleStride].</summary>
    public float* D { get; private set; }

    /// <summary>Floats between rows of <see cref="D"/>.</summary>
    public int ScaleStride { get; private set; }

    /// <summary>Q8Block32: Σq per block, int32 [M, ScaleStride].</summary>
    public int* Sum { get; private set; }

    /// <summary>Q8K: Σq per 16, int16 [M, BsumStride].</summary>
    public short* Bsums { get; private set; }

    /// <summary>Shorts between rows of <see cref="Bsums"/>.</summary>
    public int BsumStride { get; private set; }

    /// <summary>fp32 rows (Float kind), pointing at the caller's x.</summary>
    public float* X { get; private set; }

    /// <summary>Pointers and strides of the current contents, for the kernels (valid while this object lives and is not re-filled).</summary>
    internal ActView View => new()
    {
        Q = Q, D = D, Sum = Sum, Bsums = Bsums, X = X, QStride = QStride, ScaleStride = ScaleStride, BsumStride = BsumStride, K = K,
    };

    /// <summary>Quantizes x [m, k] for <paramref name="kind"/> (k a whole number of blocks of the kind).</summary>
    public void Quantize(ActivationKind kind, float* x, int m, int k)
    {
        Kind = kind;
        M = m;
        K = k;
        X = x;
        if (kind == ActivationKind.Float)
        {
            return;
        }

        int block = kind == ActivationKind.Q8K ? GgmlTypeInfo.QK_K : GgmlTypeInfo.QK;
        if (k % block != 0)
        {
            throw new ArgumentException($"{kind} activations need a multiple of {block} values per row; got {k}.", nameof(k));
        }

        QStride = (k + 63) & ~63;
        ScaleStride = ((k / block) + 15) & ~15;
        BsumStride = ((k / 16) + 31) & ~31;
        long qBytes = (long)m * QStride;
        long dBytes = (long)m * ScaleStride * 4;
        long sBytes = kind == ActivationKind.Q8K ? (long)m * BsumStride * 2 : (long)m * ScaleStride * 4;
        long need = qBytes + dBytes + sBytes + 128;
        if (_buffer.Length < need)
        {
            _buffer = GC.AllocateUninitializedArray<byte>((int)need, pinned: true);
            _base = (byte*)(((nint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_buffer)) + 63) & ~(nint)63);
        }

        Q = (sbyte*)_base;
        D = (float*)(_base + qBytes);
        Sum = (int*)(_base + qBytes + dBytes);
        Bsums = (short*)(_base + qBytes + dBytes);
        for (int r = 0; r < m; r++)
        {
            float* xr = x + ((long)r * k);
            if (kind == ActivationKind.Q8K)
            {
                QuantizeRowK(xr, Q + ((long)r * QStride), D + ((long)r * ScaleStride), Bsums + ((long)r * BsumStride), k);
            }
            else
            {
                QuantizeRow32(xr, Q + ((long)r * QStride), D + ((long)r * ScaleStride), Sum + ((long)r * ScaleStride), k);
            }
        }
    }

    /// <summary>
    /// Loads rows already in ggml's activation formats (Q8_0, Q8_1 or Q8_K bytes, as ggml's vec_dot takes them) so the
    /// kernels can be checked against ggml's own dot products on identical integers.
    /// </summary>
    public void LoadGgml(GgmlType type, byte* src, int m, int k)
    {
        var kind = type == GgmlType.Q8_K ? ActivationKind.Q8K : ActivationKind.Q8Block32;
        var tmp = new float[(long)m * k];
        fixed (float* t = tmp)
        {
            Quantize(kind, t, m, k); // sizes the buffers
        }

        X = null;
        long rowBytes = GgmlTypeInfo.RowSize(type, k);
        for (int r = 0; r < m; r++)
        {
            byte* row = src + (r * rowBytes);
            if (type == GgmlType.Q8_K)
            {
                for (int b = 0; b < k / 256; b++)
                {
                    byte* blk = row + (b * 292);
                    D[(r * ScaleStride) + b] = *(float*)blk;
                    Buffer.MemoryCopy(blk + 4, Q + ((long)r * QStride) + (b * 256), 256, 256);
                    Buffer.MemoryCopy(blk + 260, Bsums + ((long)r * BsumStride) + (b * 16), 32, 32);
                }
            }
            else
            {
                int bs = GgmlTypeInfo.TypeSize(type), qOff = type == GgmlType.Q8_1 ? 4 : 2;
                for (int b = 0; b < k / 32; b++)
                {
                    byte* blk = row + (b * bs);
                    D[(r * ScaleStride) + b] = Fp16.ToFloat(*(ushort*)blk);
                    sbyte* q = Q + ((long)r * QStride) + (b * 32);
                    Buffer.MemoryCopy(blk + qOff, q, 32, 32);
                    int s = 0;
                    for (int j = 0; j < 32; j++)
                    {
                        s += q[j];
                    }

                    Sum[(r * ScaleStride) + b] = s;
                }
            }
        }
    }

    private static void QuantizeRow32(float* x, sbyte* q, float* d, int* sum, int k)
    {
        for (int b = 0; b < k / 32; b++, x += 32, q += 32)
        {
            float amax;
            if (Vector256.IsHardwareAccelerated)
            {
                Vector256<float> m0 = Vector256.Max(Vector256.Abs(Vector256.Load(x)), Vector256.Abs(Vector256.Load(x + 8)));
                Vector256<float> m1 = Vector256.Max(Vector256.Abs(Vector256.Load(x + 16)), Vector256.Abs(Vector256.Load(x + 24)));
                Vector256<float> mm = Vector256.Max(m0, m1);
                Vector128<float> h = Vector128.Max(mm.GetLower(), mm.GetUpper());
                h = Vector128.Max(h, Vector128.Shuffle(h, Vector128.Create(2, 3, 0, 1)));
                amax = MathF.Max(h.ToScalar(), h.GetElement(1));
            }
            else
            {
                amax = 0f;
                for (int j = 0; j < 32; j++)
                {
                    float a = MathF.Abs(x[j]);
                    amax = a > amax ? a : amax;
                }
            }

            float db = amax / 127;
            float id = db != 0f ? 1f / db : 0f;
            int s = 0;
            if (Vector256.IsHardwareAccelerated)
            {
                // Round half away from zero, as roundf: trunc(v + copysign(0.5, v)) (one level apart from roundf only where
                // v + 0.5 rounds up in fp32, within an ulp below a .5 boundary).
                Vector256<float> vid = Vector256.Create(id);
                Vector256<int> i0 = Rnd(Vector256.Load(x) * vid), i1 = Rnd(Vector256.Load(x + 8) * vid);
                Vector256<int> i2 = Rnd(Vector256.Load(x + 16) * vid), i3 = Rnd(Vector256.Load(x + 24) * vid);
                s = Vector256.Sum(i0 + i1 + i2 + i3);
                Vector256<short> s01 = Vector256.Narrow(i0, i1), s23 = Vector256.Narrow(i2, i3);
                Vector256.Narrow(s01, s23).Store(q);
            }
            else
            {
                for (int j = 0; j < 32; j++)
                {
                    int v = (int)MathF.Round(x[j] * id, MidpointRounding.AwayFromZero);
                    q[j] = (sbyte)v;
                    s += v;
                }
            }

            d[b] = db;
            sum[b] = s;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Rnd(Vector256<float> v)
    {
        Vector256<float> half = Vector256.ConditionalSelect(Vector256.Create(-0f), v, Vector256.Create(0.5f));
        return Vector256.ConvertToInt32(v + half);
    }

    private static void QuantizeRowK(float* x, sbyte* q, float* d, short* bsums, int k)
    {
        for (int b = 0; b < k / 256; b++, x += 256, q += 256)
        {
            float max = 0, amax = 0;
            for (int j = 0; j < 256; j++)
            {
                float ax = MathF.Abs(x[j]);
                if (ax > amax)
                {
                    amax = ax;
                    max = x[j];
                }
            }

            if (amax == 0f)
            {
                d[b] = 0;
                new Span<byte>(q, 256).Clear();
                new Span<short>(bsums + (b * 16), 16).Clear();
                continue;
            }

            float iscale = -127f / max;
            int j0 = 0;
            if (Vector256.IsHardwareAccelerated)
            {
                // nearest_int is round-half-even, as Vector256.Round; the clamp to 127 as ggml's MIN(127, v).
                Vector256<float> vs = Vector256.Create(iscale);
                Vector256<int> lim = Vector256.Create(127);
                for (; j0 < 256; j0 += 32)
                {
                    Vector256<int> a0 = Vector256.Min(lim, Vector256.ConvertToInt32(Vector256.Round(Vector256.Load(x + j0) * vs)));
                    Vector256<int> a1 = Vector256.Min(lim, Vector256.ConvertToInt32(Vector256.Round(Vector256.Load(x + j0 + 8) * vs)));
                    Vector256<int> a2 = Vector256.Min(lim, Vector256.ConvertToInt32(Vector256.Round(Vector256.Load(x + j0 + 16) * vs)));
                    Vector256<int> a3 = Vector256.Min(lim, Vector256.ConvertToInt32(Vector256.Round(Vector256.Load(x + j0 + 24) * vs)));
                    Vector256.Narrow(Vector256.Narrow(a0, a1), Vector256.Narrow(a2, a3)).Store(q + j0);
                }
            }

            for (int j = j0; j < 256; j++)
            {
                q[j] = (sbyte)Math.Min(127, QuantizeReference.NearestInt(iscale * x[j]));
            }

            for (int g = 0; g < 16; g++)
            {
                int s = 0;
                for (int j = 0; j < 16; j++)
                {
                    s += q[(g * 16) + j];
                }

                bsums[(b * 16) + g] = (short)s;
            }

            d[b] = 1 / iscale;
        }
    }
}

/// <summary>Unmanaged view of <see cref="Q8Activations"/> for the kernels' job structs.</summary>
internal unsafe struct ActView
{
    public sbyte* Q;
    public float* D;
    public int* Sum;
    public short* Bsums;
    public float* X;
    public int QStride;
    public int ScaleStride;
    public int BsumStride;
    public int K;
}
