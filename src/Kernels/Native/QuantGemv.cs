using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using MoeServer.Kernels.Quantization;

namespace MoeServer.Kernels.Native;

/// <summary>Which inner loops <see cref="QuantGemv"/> runs.</summary>
public enum QuantPath
{
    /// <summary>The best path this CPU supports (<see cref="QuantGemv.HardwarePath"/>).</summary>
    Auto = 0,

    /// <summary>Portable scalar integer loops (any CPU).</summary>
    Scalar = 1,

    /// <summary>AVX2: <c>vpmaddubsw</c> + <c>vpmaddwd</c> pairs on 32 weights at a time, FMA accumulation.</summary>
    Avx2 = 2,

    /// <summary>AVX-VNNI: as <see cref="Avx2"/> with <c>vpdpbusd</c> for the 32-weight block formats.</summary>
    AvxVnni = 3,

    /// <summary>AVX-512BW: <c>vpmaddubsw</c> + <c>vpmaddwd</c> on 64 weights at a time.</summary>
    Avx512 = 4,
}

/// <summary>A row-major quantized weight matrix W [Rows, Cols] (the nn.Linear layout) in a ggml block format.</summary>
public readonly unsafe struct QuantizedMatrix
{
    /// <summary>Wraps <paramref name="data"/>: <paramref name="rows"/> rows of <paramref name="cols"/> values of <paramref name="type"/>, back to back.</summary>
    public QuantizedMatrix(byte* data, GgmlType type, int rows, int cols)
    {
        Data = data;
        Type = type;
        Rows = rows;
        Cols = cols;
    }

    /// <summary>First byte of row 0; rows follow each other, <see cref="RowBytes"/> apart.</summary>
    public byte* Data { get; }

    /// <summary>Block format of every row.</summary>
    public GgmlType Type { get; }

    /// <summary>Output features (N).</summary>
    public int Rows { get; }

    /// <summary>Input features (K), a whole number of blocks.</summary>
    public int Cols { get; }

    /// <summary>Bytes per row.</summary>
    public long RowBytes => GgmlTypeInfo.RowSize(Type, Cols);

    /// <summary>Bytes of the whole matrix.</summary>
    public long ByteLength => RowBytes * Rows;
}

/// <summary>
/// Small-batch products over quantized weights: <c>y[m, n] = Σ_k x[m, k] · W[n, k]</c> for W in a ggml block format,
/// x fp32 [M, K] (M = 1..32 is what it is built for), y fp32 [M, N].
/// </summary>
/// <remarks>
/// <para>As llama.cpp does, x is first quantized to 8 bits per block (<see cref="Q8Activations"/>: Q8_0-like blocks of
/// 32 for Q4_0/Q4_1/Q5_0/Q5_1/Q8_0, Q8_K super-blocks for Q4_K/Q5_K/Q6_K); the dot products are integer
/// (unsigned weight levels × signed activations, <c>maddubs</c>/<c>madd</c> or <c>dpbusd</c>), scaled and accumulated
/// in fp32. Each weight row is first unpacked once into levels (one byte per weight: 0..15, 0..31, 0..63, or the signed
/// Q8_0 quants) and per-group integer scales, then dotted with every activation row, so a batch reads and decodes
/// the weights once. A weight w = d·u + c (legacy formats: c = −8d, −16d or the block min; Q8_0: c = 0 and u signed)
/// gives Σ w·x = d_x·(d·Σ u·q + c·Σ q); the K-quants give d_x·(d·Σ_g s_g·Σ u·q − dmin·Σ_g m_g·Σ q) with the activation's
/// sums of 16 (Q6_K: u = level + 32, so m_g = 32·s_g and dmin = d).</para>
/// <para>Rows are split over a <see cref="WorkerPool"/>. F16 weights are widened to fp32 per row and dotted in fp32.</para>
/// </remarks>
public static unsafe class QuantGemv
{
    /// <summary>Below this many weight bytes a call runs on the calling thread alone.</summary>
    internal const long SerialThresholdBytes = 16 * 1024;

    /// <summary>Tasks per worker the rows are cut into.</summary>
    internal static int ChunksPerWorker { get; set; } = 4;

    /// <summary>Test hook: force a path for calls made on this thread (<see cref="QuantPath.Auto"/> = by hardware).</summary>
    [ThreadStatic]
    internal static QuantPath ForcedPath;

    [ThreadStatic]
    private static Q8Activations? t_act;

    [ThreadStatic]
    private static Q8Activations? t_act2;

    [ThreadStatic]
    private static byte[]? t_unpack;

    /// <summary>The widest path this CPU runs: AVX-512BW, else AVX-VNNI, else AVX2+FMA, else scalar.</summary>
    public static QuantPath HardwarePath { get; } =
        Avx512BW.IsSupported && Vector512.IsHardwareAccelerated ? QuantPath.Avx512
        : AvxVnni.IsSupported && Fma.IsSupported ? QuantPath.AvxVnni
        : Avx2.IsSupported && Fma.IsSupported ? QuantPath.Avx2
        : QuantPath.Scalar;

    /// <summary>Whether <paramref name="path"/> can run on this CPU.</summary>
    public static bool IsSupported(QuantPath path) => path switch
    {
        QuantPath.Auto or QuantPath.Scalar => true,
        QuantPath.Avx2 => Avx2.IsSupported && Fma.IsSupported,
        QuantPath.AvxVnni => AvxVnni.IsSupported && Fma.IsSupported,
        QuantPath.Avx512 => Avx512BW.IsSupported && Avx512F.IsSupported && Fma.IsSupported && Vector512.IsHardwareAccelerated,
        _ => false,
    };

    /// <summary>One line for start-up logs: the chosen path and the CPU features behind it.</summary>
    public static string Describe() =>
        $"quantized GEMV path {HardwarePath} (AVX2 {Avx2.IsSupported}, FMA {Fma.IsSupported}, AVX-VNNI {AvxVnni.IsSupported}, AVX-512BW {Avx512BW.IsSupported})";

    /// <summary>Weight types the kernels take.</summary>
    public static bool Supports(GgmlType type) => type is GgmlType.F16 or GgmlType.Q4_0 or GgmlType.Q4_1 or GgmlType.Q5_0
        or GgmlType.Q5_1 or GgmlType.Q8_0 or GgmlType.Q4_K or GgmlType.Q5_K or GgmlType.Q6_K;

    private static QuantPath ActivePath
    {
        get
        {
            QuantPath p = ForcedPath == QuantPath.Auto ? HardwarePath : ForcedPath;
            if (!IsSupported(p))
            {
                throw new PlatformNotSupportedException($"Quantized GEMV path {p} is not supported on this CPU.");
            }

            return p;
        }
    }

    /// <summary>y[m, n] = alpha · Σ_k x[m, k] · W[n, k] (or y += that when <paramref name="accumulate"/>).</summary>
    public static void Multiply(in QuantizedMatrix w, float* x, int m, float* y, float alpha = 1f, bool accumulate = false, WorkerPool? pool = null)
    {
        Check(w, m);
        Q8Activations act = Activations(ref t_act, w.Type, x, m, w.Cols);
        var job = new Job { W0 = w.Data, Type0 = w.Type, RowBytes0 = w.RowBytes, A0 = act.View, Rows = w.Rows, K = w.Cols, M = m, Y = y, Alpha = alpha, Accumulate = accumulate, Path = ActivePath };
        Run(ref job, w.ByteLength, pool);
        GC.KeepAlive(act);
    }

    /// <summary>Span form of <see cref="Multiply(in QuantizedMatrix, float*, int, float*, float, bool, WorkerPool?)"/>: W is n rows of k values of <paramref name="type"/>.</summary>
    public static void Multiply(ReadOnlySpan<byte> w, GgmlType type, int n, int k, ReadOnlySpan<float> x, int m, Span<float> y, float alpha = 1f, bool accumulate = false, WorkerPool? pool = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(n);
        CheckLength(w.Length, GgmlTypeInfo.RowSize(type, k) * n, nameof(w));
        CheckLength(x.Length, (long)m * k, nameof(x));
        CheckLength(y.Length, (long)m * n, nameof(y));
        fixed (byte* pw = w)
        fixed (float* px = x)
        fixed (float* py = y)
        {
            Multiply(new QuantizedMatrix(pw, type, n, k), px, m, py, alpha, accumulate, pool);
        }
    }

    /// <summary>Fused SwiGLU front half: h[m, i] = silu(x[m]·gate[i]) · (x[m]·up[i]) over quantized gate and up matrices.</summary>
    public static void SiluGateUp(in QuantizedMatrix gate, in QuantizedMatrix up, float* x, int m, float* h, WorkerPool? pool = null)
    {
        Check(gate, m);
        Check(up, m);
        if (gate.Rows != up.Rows || gate.Cols != up.Cols)
        {
            throw new ArgumentException($"gate [{gate.Rows}, {gate.Cols}] and up [{up.Rows}, {up.Cols}] differ in shape.", nameof(up));
        }

        Q8Activations a0 = Activations(ref t_act, gate.Type, x, m, gate.Cols);
        Q8Activations a1 = Kind(up.Type) == Kind(gate.Type) ? a0 : Activations(ref t_act2, up.Type, x, m, up.Cols);
        var job = new Job
        {
            W0 = gate.Data, Type0 = gate.Type, RowBytes0 = gate.RowBytes, A0 = a0.View,
            W1 = up.Data, Type1 = up.Type, RowBytes1 = up.RowBytes, A1 = a1.View,
            Rows = gate.Rows, K = gate.Cols, M = m, Y = h, Alpha = 1f, Silu = true, Path = ActivePath,
        };
        Run(ref job, gate.ByteLength + up.ByteLength, pool);
        GC.KeepAlive(a0);
        GC.KeepAlive(a1);
    }

    /// <summary>Span form of <see cref="SiluGateUp(in QuantizedMatrix, in QuantizedMatrix, float*, int, float*, WorkerPool?)"/>.</summary>
    public static void SiluGateUp(ReadOnlySpan<byte> gate, ReadOnlySpan<byte> up, GgmlType type, int intermediate, int k, ReadOnlySpan<float> x, int m, Span<float> h, WorkerPool? pool = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(intermediate);
        long bytes = GgmlTypeInfo.RowSize(type, k) * intermediate;
        CheckLength(gate.Length, bytes, nameof(gate));
        CheckLength(up.Length, bytes, nameof(up));
        CheckLength(x.Length, (long)m * k, nameof(x));
        CheckLength(h.Length, (long)m * intermediate, nameof(h));
        fixed (byte* pg = gate)
        fixed (byte* pu = up)
        fixed (float* px = x)
        fixed (float* ph = h)
        {
            SiluGateUp(new QuantizedMatrix(pg, type, intermediate, k), new QuantizedMatrix(pu, type, intermediate, k), px, m, ph, pool);
        }
    }

    /// <summary>
    /// Test hook: dots of weight rows with activation rows already quantized (e.g. ggml's own Q8 bytes loaded with
    /// <see cref="Q8Activations.LoadGgml"/>): out[r] = W[r] · act[pairs[r]].
    /// </summary>
    internal static void DotRows(in QuantizedMatrix w, Q8Activations act, int[] pairs, float[] result, QuantPath path)
    {
        int nb = Unpacked.Bytes(w.Cols);
        byte[] buf = GC.AllocateUninitializedArray<byte>(nb + 64, pinned: true);
        byte* ub = (byte*)(((nint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(buf)) + 63) & ~(nint)63);
        var job = new Job { Type0 = w.Type, A0 = act.View, K = w.Cols, M = act.M, Path = path };
        for (int r = 0; r < pairs.Length; r++)
        {
            var u = new Unpacked(ub, w.Cols);
            UnpackRow(w.Type, w.Data + (r * w.RowBytes), w.Cols, ref u, path);
            result[r] = DotOne(ref job, ref u, ref job.A0, pairs[r], w.Type);
        }

        GC.KeepAlive(buf);
    }

    internal static ActivationKind Kind(GgmlType type) => GgmlTypeInfo.VecDotType(type) switch
    {
        GgmlType.Q8_K => ActivationKind.Q8K,
        GgmlType.F32 => ActivationKind.Float,
        _ => ActivationKind.Q8Block32,
    };

    private static Q8Activations Activations(ref Q8Activations? slot, GgmlType type, float* x, int m, int k)
    {
        slot ??= new Q8Activations();
        slot.Quantize(Kind(type), x, m, k);
        return slot;
    }

    private static void Check(in QuantizedMatrix w, int m)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(w.Rows);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(w.Cols);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(m);
        if (!Supports(w.Type))
        {
            throw new NotSupportedException($"No quantized GEMV for {w.Type}.");
        }

        if (!GgmlTypeInfo.Fits(w.Type, w.Cols))
        {
            throw new ArgumentException($"{w.Type} rows need a multiple of {GgmlTypeInfo.BlockSize(w.Type)} columns; got {w.Cols}.", nameof(w));
        }
    }

    private static void CheckLength(long actual, long needed, string name)
    {
        if (actual < needed)
        {
            throw new ArgumentException($"Span holds {actual} elements; the shapes need {needed}.", name);
        }
    }

    private static void Run(ref Job job, long weightBytes, WorkerPool? pool)
    {
        pool ??= WorkerPool.Shared;
        int tasks = weightBytes <= SerialThresholdBytes ? 1 : Math.Min(job.Rows, pool.WorkerCount * ChunksPerWorker);
        job.ChunkRows = (job.Rows + tasks - 1) / tasks;
        tasks = (job.Rows + job.ChunkRows - 1) / job.ChunkRows;
        fixed (Job* pj = &job)
        {
            if (tasks == 1)
            {
                RunChunk(0, (nint)pj);
            }
            else
            {
                pool.Parallel(tasks, &RunChunk, (nint)pj);
            }
        }

    }

    private static void RunChunk(int chunk, nint jobPtr)
    {
        ref Job job = ref Unsafe.AsRef<Job>((void*)jobPtr);
        int r0 = chunk * job.ChunkRows;
        int r1 = Math.Min(job.Rows, r0 + job.ChunkRows);
        int need = Unpacked.Bytes(job.K);
        byte[]? buf = t_unpack;
        if (buf is null || buf.Length < need + 64)
        {
            buf = GC.AllocateUninitializedArray<byte>(need + 64, pinned: true);
            t_unpack = buf;
        }

        byte* ub = (byte*)(((nint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(buf)) + 63) & ~(nint)63);
        int m = job.M;
        float* g = stackalloc float[Math.Min(m, 64)];
        float[]? gHeap = m > 64 ? new float[m] : null;
        for (int r = r0; r < r1; r++)
        {
            var u = new Unpacked(ub, job.K);
            UnpackRow(job.Type0, job.W0 + (r * job.RowBytes0), job.K, ref u, job.Path);
            if (!job.Silu)
            {
                for (int c = 0; c < m; c++)
                {
                    float s = job.Alpha * DotOne(ref job, ref u, ref job.A0, c, job.Type0);
                    float* dst = job.Y + ((long)c * job.Rows) + r;
                    *dst = job.Accumulate ? *dst + s : s;
                }
            }
            else
            {
                for (int c = 0; c < m; c++)
                {
                    float s = DotOne(ref job, ref u, ref job.A0, c, job.Type0);
                    if (gHeap is null)
                    {
                        g[c] = s;
                    }
                    else
                    {
                        gHeap[c] = s;
                    }
                }

                UnpackRow(job.Type1, job.W1 + (r * job.RowBytes1), job.K, ref u, job.Path);
                for (int c = 0; c < m; c++)
                {
                    float gate = gHeap is null ? g[c] : gHeap[c];
                    float up = DotOne(ref job, ref u, ref job.A1, c, job.Type1);
                    job.Y[((long)c * job.Rows) + r] = gate / (1f + MathF.Exp(-gate)) * up;
                }
            }
        }
    }

    private struct Job
    {
        public byte* W0;
        public byte* W1;
        public GgmlType Type0;
        public GgmlType Type1;
        public long RowBytes0;
        public long RowBytes1;
        public ActView A0;
        public ActView A1;
        public float* Y;
        public int Rows;
        public int K;
        public int M;
        public int ChunkRows;
        public float Alpha;
        public bool Accumulate;
        public bool Silu;
        public QuantPath Path;
    }

    /// <summary>
    /// One weight row decoded for the integer dot products: levels (one byte per weight), and per block (legacy) the
    /// scale d and offset c, or per super-block (K) d, dmin, the 16 scales of 16 spread over maddubs lanes, and the min
    /// terms per 16. F16 rows are widened to fp32 in <see cref="F"/>.
    /// </summary>
    private readonly struct Unpacked
    {
        public readonly byte* U;      // [k] levels
        public readonly float* Dw;    // legacy: [k/32] d; K: [k/256] d
        public readonly float* Cw;    // legacy: [k/32] c; K: [k/256] dmin
        public readonly short* Scx;   // K: [k/32 · 16] scale per maddubs lane
        public readonly short* Mt;    // K: [k/16] min term per 16
        public readonly float* F;     // F16: [k] fp32

        public Unpacked(byte* b, int k)
        {
            int k64 = (k + 63) & ~63;
            U = b;
            Dw = (float*)(b + k64);
            Cw = Dw + (k64 / 32);
            Scx = (short*)(Cw + (k64 / 32));
            Mt = Scx + (k64 / 2);
            F = (float*)(Mt + (k64 / 16));
        }

        public static int Bytes(int k)
        {
            int k64 = (k + 63) & ~63;
            return k64 + (2 * (k64 / 32) * 4) + (k64 / 2 * 2) + (k64 / 16 * 2) + (k64 * 4) + 64;
        }
    }

    private static float DotOne(ref Job job, ref Unpacked u, ref ActView a, int c, GgmlType type)
    {
        int k = job.K;
        switch (Kind(type))
        {
            case ActivationKind.Float:
                return DotFloat(u.F, a.X + ((long)c * k), k, job.Path);
            case ActivationKind.Q8Block32:
            {
                sbyte* q = a.Q + ((long)c * a.QStride);
                float* dx = a.D + ((long)c * a.ScaleStride);
                int* sx = a.Sum + ((long)c * a.ScaleStride);
                bool signedW = type == GgmlType.Q8_0;
                return job.Path switch
                {
                    QuantPath.Avx512 => Legacy512(u.U, u.Dw, u.Cw, q, dx, sx, k / 32, signedW),
                    QuantPath.AvxVnni => Legacy256(u.U, u.Dw, u.Cw, q, dx, sx, k / 32, signedW, vnni: true),
                    QuantPath.Avx2 => Legacy256(u.U, u.Dw, u.Cw, q, dx, sx, k / 32, signedW, vnni: false),
                    _ => LegacyScalar(u.U, u.Dw, u.Cw, q, dx, sx, k / 32, signedW),
                };
            }

            default:
            {
                sbyte* q = a.Q + ((long)c * a.QStride);
                float* dx = a.D + ((long)c * a.ScaleStride);
                short* bs = a.Bsums + ((long)c * a.BsumStride);
                return job.Path switch
                {
                    QuantPath.Avx512 => K512(ref u, q, dx, bs, k / 256),
                    QuantPath.Avx2 or QuantPath.AvxVnni => K256(ref u, q, dx, bs, k / 256),
                    _ => KScalar(ref u, q, dx, bs, k / 256),
                };
            }
        }
    }

    // ---------------------------------------------------------------- dot products

    private static float LegacyScalar(byte* u, float* dw, float* cw, sbyte* q, float* dx, int* sx, int nb, bool signedW)
    {
        float acc = 0;
        for (int b = 0; b < nb; b++)
        {
            int s = 0;
            if (signedW)
            {
                for (int j = 0; j < 32; j++)
                {
                    s += (sbyte)u[(32 * b) + j] * q[(32 * b) + j];
                }
            }
            else
            {
                for (int j = 0; j < 32; j++)
                {
                    s += u[(32 * b) + j] * q[(32 * b) + j];
                }
            }

            acc += dx[b] * ((dw[b] * s) + (cw[b] * sx[b]));
        }

        return acc;
    }

    private static float KScalar(ref Unpacked w, sbyte* q, float* dx, short* bs, int nsb)
    {
        float acc = 0;
        for (int sb = 0; sb < nsb; sb++)
        {
            int isum = 0, msum = 0;
            for (int i = 0; i < 16; i++)
            {
                int s = 0;
                int o = (256 * sb) + (16 * i);
                for (int j = 0; j < 16; j++)
                {
                    s += w.U[o + j] * q[o + j];
                }

                int scale = w.Scx[(256 * sb / 2) + (16 * (i / 2)) + (8 * (i % 2))];
                isum += scale * s;
                msum += w.Mt[(16 * sb) + i] * bs[(16 * sb) + i];
            }

            acc += dx[sb] * ((w.Dw[sb] * isum) - (w.Cw[sb] * msum));
        }

        return acc;
    }

    private interface IFlag
    {
    }

    private struct Yes : IFlag
    {
    }

    private struct No : IFlag
    {
    }

    private static float Legacy256(byte* u, float* dw, float* cw, sbyte* q, float* dx, int* sx, int nb, bool signedW, bool vnni) =>
        (signedW, vnni) switch
        {
            (true, true) => Legacy256<Yes, Yes>(u, dw, cw, q, dx, sx, nb),
            (true, false) => Legacy256<Yes, No>(u, dw, cw, q, dx, sx, nb),
            (false, true) => Legacy256<No, Yes>(u, dw, cw, q, dx, sx, nb),
            _ => Legacy256<No, No>(u, dw, cw, q, dx, sx, nb),
        };

    private static float Legacy512(byte* u, float* dw, float* cw, sbyte* q, float* dx, int* sx, int nb, bool signedW) =>
        signedW ? Legacy512<Yes>(u, dw, cw, q, dx, sx, nb) : Legacy512<No>(u, dw, cw, q, dx, sx, nb);

    /// <summary>
    /// 32-weight blocks, 256-bit: 8 blocks per step; the 8 scale products d_x·d_w are one vector multiply and each
    /// block's is broadcast with a lane permute. The offsets c·Σq go into a vector accumulator of their own.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static float Legacy256<TSigned, TVnni>(byte* u, float* dw, float* cw, sbyte* q, float* dx, int* sx, int nb)
        where TSigned : struct, IFlag
        where TVnni : struct, IFlag
    {
        Vector256<float> acc0 = Vector256<float>.Zero, acc1 = Vector256<float>.Zero, corr = Vector256<float>.Zero;
        int b = 0;
        for (; b + 8 <= nb; b += 8)
        {
            Vector256<float> dxv = Avx.LoadVector256(dx + b);
            Vector256<float> prod = Avx.Multiply(dxv, Avx.LoadVector256(dw + b));
            if (typeof(TSigned) == typeof(No))
            {
                corr = Fma.MultiplyAdd(Avx.Multiply(dxv, Avx.LoadVector256(cw + b)), Avx.ConvertToVector256Single(Avx.LoadVector256(sx + b)), corr);
            }

            byte* ub = u + (32 * b);
            sbyte* qb = q + (32 * b);
            for (int j = 0; j < 8; j += 2)
            {
                Vector256<int> p0 = Block256<TSigned, TVnni>(ub + (32 * j), qb + (32 * j));
                Vector256<int> p1 = Block256<TSigned, TVnni>(ub + (32 * j) + 32, qb + (32 * j) + 32);
                acc0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(p0), Avx2.PermuteVar8x32(prod, Vector256.Create(j)), acc0);
                acc1 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(p1), Avx2.PermuteVar8x32(prod, Vector256.Create(j + 1)), acc1);
            }
        }

        float tail = 0;
        for (; b < nb; b++)
        {
            Vector256<int> p0 = Block256<TSigned, TVnni>(u + (32 * b), q + (32 * b));
            acc0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(p0), Vector256.Create(dx[b] * dw[b]), acc0);
            tail += dx[b] * cw[b] * sx[b];
        }

        return Vector256.Sum(acc0 + acc1 + corr) + tail;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Block256<TSigned, TVnni>(byte* u, sbyte* q)
        where TSigned : struct, IFlag
        where TVnni : struct, IFlag
    {
        Vector256<byte> uv = Avx.LoadVector256(u);
        Vector256<sbyte> qv = Avx.LoadVector256(q);
        if (typeof(TSigned) == typeof(Yes))
        {
            // Sign trick: |w| · (q · sign(w)) keeps the unsigned × signed form maddubs / dpbusd take.
            Vector256<sbyte> wv = uv.AsSByte();
            uv = Avx2.Abs(wv);
            qv = Avx2.Sign(qv, wv);
        }

        if (typeof(TVnni) == typeof(Yes))
        {
            return AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, uv, qv);
        }

        return Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(uv, qv), Vector256.Create((short)1));
    }

    /// <summary>32-weight blocks, 512-bit: two blocks per multiply; 8 blocks' scale products per vector, spread by vpermps.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static float Legacy512<TSigned>(byte* u, float* dw, float* cw, sbyte* q, float* dx, int* sx, int nb)
        where TSigned : struct, IFlag
    {
        Vector512<float> acc0 = Vector512<float>.Zero, acc1 = Vector512<float>.Zero;
        Vector256<float> corr = Vector256<float>.Zero;
        Vector512<short> ones = Vector512.Create((short)1);
        Vector512<int> idx0 = Vector512.Create(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
        Vector512<int> two = Vector512.Create(2);
        int b = 0;
        for (; b + 8 <= nb; b += 8)
        {
            Vector256<float> dxv = Avx.LoadVector256(dx + b);
            Vector512<float> prod = Avx.Multiply(dxv, Avx.LoadVector256(dw + b)).ToVector512Unsafe();
            if (typeof(TSigned) == typeof(No))
            {
                corr = Fma.MultiplyAdd(Avx.Multiply(dxv, Avx.LoadVector256(cw + b)), Avx.ConvertToVector256Single(Avx.LoadVector256(sx + b)), corr);
            }

            Vector512<int> idx = idx0;
            for (int j = 0; j < 8; j += 4)
            {
                Vector512<int> p0 = Block512<TSigned>(u + (32 * (b + j)), q + (32 * (b + j)), ones);
                Vector512<int> p1 = Block512<TSigned>(u + (32 * (b + j)) + 64, q + (32 * (b + j)) + 64, ones);
                acc0 = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(p0), Avx512F.PermuteVar16x32(prod, idx), acc0);
                idx += two;
                acc1 = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(p1), Avx512F.PermuteVar16x32(prod, idx), acc1);
                idx += two;
            }
        }

        float tail = 0;
        if (b < nb)
        {
            tail = Legacy256<TSigned, No>(u + (32 * b), dw + b, cw + b, q + (32 * b), dx + b, sx + b, nb - b);
        }

        return Vector512.Sum(acc0 + acc1) + Vector256.Sum(corr) + tail;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> Block512<TSigned>(byte* u, sbyte* q, Vector512<short> ones)
        where TSigned : struct, IFlag
    {
        Vector512<byte> uv = Vector512.Load(u);
        Vector512<sbyte> qv = Vector512.Load(q);
        if (typeof(TSigned) == typeof(Yes))
        {
            Vector512<sbyte> wv = uv.AsSByte();
            uv = Avx512BW.Abs(wv);
            qv = Vector512.ConditionalSelect(Vector512.LessThan(wv, Vector512<sbyte>.Zero), Vector512<sbyte>.Zero - qv, qv);
        }

        return Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(uv, qv), ones);
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static float K256(ref Unpacked w, sbyte* q, float* dx, short* bs, int nsb)
    {
        Vector256<float> acc = Vector256<float>.Zero;
        for (int sb = 0; sb < nsb; sb++)
        {
            byte* u = w.U + (256 * sb);
            sbyte* qq = q + (256 * sb);
            short* scx = w.Scx + (128 * sb);
            Vector256<int> i0 = Vector256<int>.Zero, i1 = Vector256<int>.Zero;
            for (int g = 0; g < 8; g += 2)
            {
                Vector256<short> p0 = Avx2.MultiplyAddAdjacent(Avx.LoadVector256(u + (32 * g)), Avx.LoadVector256(qq + (32 * g)));
                Vector256<short> p1 = Avx2.MultiplyAddAdjacent(Avx.LoadVector256(u + (32 * g) + 32), Avx.LoadVector256(qq + (32 * g) + 32));
                i0 = Avx2.Add(i0, Avx2.MultiplyAddAdjacent(p0, Avx.LoadVector256(scx + (16 * g))));
                i1 = Avx2.Add(i1, Avx2.MultiplyAddAdjacent(p1, Avx.LoadVector256(scx + (16 * g) + 16)));
            }

            Vector256<int> mins = Avx2.MultiplyAddAdjacent(Avx.LoadVector256(w.Mt + (16 * sb)), Avx.LoadVector256(bs + (16 * sb)));
            acc = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Avx2.Add(i0, i1)), Vector256.Create(dx[sb] * w.Dw[sb]), acc);
            acc = Fma.MultiplyAdd(Avx.ConvertToVector256Single(mins), Vector256.Create(-dx[sb] * w.Cw[sb]), acc);
        }

        return Vector256.Sum(acc);
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static float K512(ref Unpacked w, sbyte* q, float* dx, short* bs, int nsb)
    {
        Vector512<float> acc = Vector512<float>.Zero;
        Vector256<float> accMin = Vector256<float>.Zero;
        for (int sb = 0; sb < nsb; sb++)
        {
            byte* u = w.U + (256 * sb);
            sbyte* qq = q + (256 * sb);
            short* scx = w.Scx + (128 * sb);
            Vector512<int> i0 = Vector512<int>.Zero, i1 = Vector512<int>.Zero;
            for (int c = 0; c < 4; c += 2)
            {
                Vector512<short> p0 = Avx512BW.MultiplyAddAdjacent(Vector512.Load(u + (64 * c)), Vector512.Load(qq + (64 * c)));
                Vector512<short> p1 = Avx512BW.MultiplyAddAdjacent(Vector512.Load(u + (64 * c) + 64), Vector512.Load(qq + (64 * c) + 64));
                i0 += Avx512BW.MultiplyAddAdjacent(p0, Vector512.Load(scx + (32 * c)));
                i1 += Avx512BW.MultiplyAddAdjacent(p1, Vector512.Load(scx + (32 * c) + 32));
            }

            Vector256<int> mins = Avx2.MultiplyAddAdjacent(Avx.LoadVector256(w.Mt + (16 * sb)), Avx.LoadVector256(bs + (16 * sb)));
            acc = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(i0 + i1), Vector512.Create(dx[sb] * w.Dw[sb]), acc);
            accMin = Fma.MultiplyAdd(Avx.ConvertToVector256Single(mins), Vector256.Create(-dx[sb] * w.Cw[sb]), accMin);
        }

        return Vector512.Sum(acc) + Vector256.Sum(accMin);
    }

    private static float DotFloat(float* f, float* x, int k, QuantPath path)
    {
        int i = 0;
        float s = 0;
        if (path != QuantPath.Scalar)
        {
            Vector256<float> a0 = Vector256<float>.Zero, a1 = Vector256<float>.Zero;
            for (; i + 16 <= k; i += 16)
            {
                a0 = Fma.MultiplyAdd(Avx.LoadVector256(f + i), Avx.LoadVector256(x + i), a0);
                a1 = Fma.MultiplyAdd(Avx.LoadVector256(f + i + 8), Avx.LoadVector256(x + i + 8), a1);
            }

            s = Vector256.Sum(a0 + a1);
        }

        for (; i < k; i++)
        {
            s += f[i] * x[i];
        }

        return s;
    }

    // ---------------------------------------------------------------- unpacking

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void UnpackRow(GgmlType type, byte* row, int k, ref Unpacked u, QuantPath path)
    {
        bool vec = path != QuantPath.Scalar;
        switch (type)
        {
            case GgmlType.F16:
                UnpackF16(row, u.F, k, vec);
                break;
            case GgmlType.Q4_0:
            case GgmlType.Q4_1:
            case GgmlType.Q5_0:
            case GgmlType.Q5_1:
            case GgmlType.Q8_0:
                UnpackLegacy(type, row, k / 32, ref u, vec);
                break;
            case GgmlType.Q4_K:
            case GgmlType.Q5_K:
                UnpackQ45K(type == GgmlType.Q5_K, row, k / 256, ref u, vec);
                break;
            case GgmlType.Q6_K:
                UnpackQ6K(row, k / 256, ref u, vec);
                break;
            default:
                throw new NotSupportedException($"No quantized GEMV for {type}.");
        }
    }

    /// <summary>All 65536 fp16 values as fp32: a block scale costs one load (System.Half's conversion is software).</summary>
    private static readonly float* s_halfTable = BuildHalfTable();

    private static float* BuildHalfTable()
    {
        float* t = (float*)NativeMemory.AlignedAlloc(65536 * sizeof(float), 64);
        for (int i = 0; i < 65536; i++)
        {
            t[i] = Fp16.ToFloat((ushort)i);
        }

        return t;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float H(byte* p) => s_halfTable[*(ushort*)p];

    private static void UnpackF16(byte* row, float* f, int k, bool vec)
    {
        ushort* h = (ushort*)row;
        int i = 0;
        if (vec)
        {
            // fp16 → fp32 by bits: exponent and mantissa moved up 13 bits and scaled by 2^112 (exact for normal and
            // subnormal halves), inf/NaN given the all-ones fp32 exponent, then the sign.
            Vector256<uint> magic = Vector256.Create(0x77800000u); // 2^112
            for (; i + 8 <= k; i += 8)
            {
                Vector256<uint> v = Avx2.ConvertToVector256Int32(Vector128.Load(h + i)).AsUInt32();
                Vector256<uint> em = (v & Vector256.Create(0x7fffu)) << 13;
                Vector256<uint> val = (em.AsSingle() * magic.AsSingle()).AsUInt32();
                Vector256<uint> infNan = Vector256.Equals(v & Vector256.Create(0x7c00u), Vector256.Create(0x7c00u));
                val = Vector256.ConditionalSelect(infNan, em | Vector256.Create(0x7f800000u), val);
                ((v & Vector256.Create(0x8000u)) << 16 | val).AsSingle().Store(f + i);
            }
        }

        for (; i < k; i++)
        {
            f[i] = Fp16.ToFloat(h[i]);
        }
    }

    private static void UnpackLegacy(GgmlType type, byte* row, int nb, ref Unpacked u, bool vec)
    {
        switch (type)
        {
            case GgmlType.Q8_0:
                for (int b = 0; b < nb; b++)
                {
                    byte* blk = row + (b * 34);
                    u.Dw[b] = H(blk);
                    u.Cw[b] = 0;
                    if (vec)
                    {
                        Vector256.Load(blk + 2).Store(u.U + (32 * b));
                    }
                    else
                    {
                        Buffer.MemoryCopy(blk + 2, u.U + (32 * b), 32, 32);
                    }
                }

                break;
            case GgmlType.Q4_0:
                for (int b = 0; b < nb; b++)
                {
                    byte* blk = row + (b * 18);
                    float d = H(blk);
                    u.Dw[b] = d;
                    u.Cw[b] = -8 * d;
                    Nibbles(blk + 2, u.U + (32 * b), vec);
                }

                break;
            case GgmlType.Q4_1:
                for (int b = 0; b < nb; b++)
                {
                    byte* blk = row + (b * 20);
                    u.Dw[b] = H(blk);
                    u.Cw[b] = H(blk + 2);
                    Nibbles(blk + 4, u.U + (32 * b), vec);
                }

                break;
            case GgmlType.Q5_0:
                for (int b = 0; b < nb; b++)
                {
                    byte* blk = row + (b * 22);
                    float d = H(blk);
                    u.Dw[b] = d;
                    u.Cw[b] = -16 * d;
                    Nibbles(blk + 6, u.U + (32 * b), vec);
                    FifthBits(*(uint*)(blk + 2), u.U + (32 * b), vec);
                }

                break;
            default:
                for (int b = 0; b < nb; b++)
                {
                    byte* blk = row + (b * 24);
                    u.Dw[b] = H(blk);
                    u.Cw[b] = H(blk + 2);
                    Nibbles(blk + 8, u.U + (32 * b), vec);
                    FifthBits(*(uint*)(blk + 4), u.U + (32 * b), vec);
                }

                break;
        }
    }

    /// <summary>16 bytes of nibbles → 32 levels: low nibbles first, then high (the legacy layout).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Nibbles(byte* qs, byte* dst, bool vec)
    {
        if (vec)
        {
            Vector128<byte> v = Vector128.Load(qs);
            Vector256.Create(v & Vector128.Create((byte)0x0F), Vector128.ShiftRightLogical(v, 4)).Store(dst);
            return;
        }

        for (int j = 0; j < 16; j++)
        {
            dst[j] = (byte)(qs[j] & 0x0F);
            dst[j + 16] = (byte)(qs[j] >> 4);
        }
    }

    /// <summary>Bit e of qh is bit 4 of level e.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void FifthBits(uint qh, byte* dst, bool vec)
    {
        if (vec)
        {
            // Byte e gets byte e/8 of qh (in-lane shuffle of the broadcast word), then its bit e%8 is tested.
            Vector256<byte> all = Vector256.Create(qh).AsByte();
            Vector256<byte> idx = Vector256.Create(0x0000000000000000UL, 0x0101010101010101UL, 0x0202020202020202UL, 0x0303030303030303UL).AsByte();
            Vector256<byte> spread = Avx2.Shuffle(all, idx);
            Vector256<byte> bit = Vector256.Create(0x8040201008040201UL).AsByte();
            Vector256<byte> set = Vector256.Equals(spread & bit, bit);
            (Vector256.Load(dst) | (set & Vector256.Create((byte)0x10))).Store(dst);
            return;
        }

        for (int e = 0; e < 32; e++)
        {
            dst[e] |= (byte)(((qh >> e) & 1) << 4);
        }
    }

    private static void UnpackQ45K(bool five, byte* row, int nsb, ref Unpacked u, bool vec)
    {
        int bs = five ? 176 : 144;
        for (int sb = 0; sb < nsb; sb++)
        {
            byte* blk = row + (sb * bs);
            u.Dw[sb] = H(blk);
            u.Cw[sb] = H(blk + 2);
            byte* sc = blk + 4;
            short* scx = u.Scx + (128 * sb);
            short* mt = u.Mt + (16 * sb);
            // The 12 packed bytes → 8 six-bit scales then 8 six-bit mins, as three 32-bit words (the kmask trick).
            uint u0 = *(uint*)sc, u1 = *(uint*)(sc + 4), u2 = *(uint*)(sc + 8);
            const uint kmask1 = 0x3f3f3f3f, kmask2 = 0x0f0f0f0f, kmask3 = 0x03030303;
            uint scLo = u0 & kmask1;
            uint scHi = (u2 & kmask2) | (((u0 >> 6) & kmask3) << 4);
            uint mnLo = u1 & kmask1;
            uint mnHi = ((u2 >> 4) & kmask2) | (((u1 >> 6) & kmask3) << 4);
            ulong scales8 = scLo | ((ulong)scHi << 32), mins8 = mnLo | ((ulong)mnHi << 32);
            if (vec)
            {
                // Mins per 16: each sub-block's min twice (zero-extend the 8 bytes, interleave with themselves).
                Vector128<short> m8 = Vector128.WidenLower(Vector128.CreateScalar(mins8).AsByte()).AsInt16();
                Sse2.UnpackLow(m8, m8).Store(mt);
                Sse2.UnpackHigh(m8, m8).Store(mt + 8);
                for (int g = 0; g < 8; g++)
                {
                    Vector256.Create((short)((scales8 >> (8 * g)) & 0xFF)).Store(scx + (16 * g));
                }
            }
            else
            {
                for (int g = 0; g < 8; g++)
                {
                    short s = (short)((scales8 >> (8 * g)) & 0xFF), m = (short)((mins8 >> (8 * g)) & 0xFF);
                    new Span<short>(scx + (16 * g), 16).Fill(s);
                    mt[2 * g] = m;
                    mt[(2 * g) + 1] = m;
                }
            }

            byte* qs = blk + (five ? 48 : 16);
            byte* qh = blk + 16;
            byte* dst = u.U + (256 * sb);
            if (vec)
            {
                Vector256<byte> low4 = Vector256.Create((byte)0x0F);
                Vector256<byte> hv = five ? Vector256.Load(qh) : Vector256<byte>.Zero;
                Vector256<byte> one = Vector256.Create((byte)1);
                for (int c = 0; c < 4; c++)
                {
                    Vector256<byte> v = Vector256.Load(qs + (32 * c));
                    Vector256<byte> lo = v & low4;
                    Vector256<byte> hi = Vector256.ShiftRightLogical(v, 4);
                    if (five)
                    {
                        lo |= Vector256.ShiftLeft(Vector256.ShiftRightLogical(hv, 2 * c) & one, 4);
                        hi |= Vector256.ShiftLeft(Vector256.ShiftRightLogical(hv, (2 * c) + 1) & one, 4);
                    }

                    lo.Store(dst + (64 * c));
                    hi.Store(dst + (64 * c) + 32);
                }
            }
            else
            {
                for (int c = 0; c < 4; c++)
                {
                    for (int l = 0; l < 32; l++)
                    {
                        int v = qs[(32 * c) + l];
                        int lo = v & 0xF, hi = v >> 4;
                        if (five)
                        {
                            lo |= ((qh[l] >> (2 * c)) & 1) << 4;
                            hi |= ((qh[l] >> ((2 * c) + 1)) & 1) << 4;
                        }

                        dst[(64 * c) + l] = (byte)lo;
                        dst[(64 * c) + 32 + l] = (byte)hi;
                    }
                }
            }
        }
    }

    private static void UnpackQ6K(byte* row, int nsb, ref Unpacked u, bool vec)
    {
        for (int sb = 0; sb < nsb; sb++)
        {
            byte* blk = row + (sb * 210);
            float d = H(blk + 208);
            u.Dw[sb] = d;
            u.Cw[sb] = d;
            sbyte* sc = (sbyte*)(blk + 192);
            short* scx = u.Scx + (128 * sb);
            short* mt = u.Mt + (16 * sb);
            if (vec)
            {
                // 16 int8 scales → int16; lanes of scx for group g: 8 × scale 2g, then 8 × scale 2g + 1.
                Vector256<short> s16 = Avx2.ConvertToVector256Int16(Vector128.Load(sc));
                (s16 << 5).Store(mt);
                for (int g = 0; g < 8; g++)
                {
                    Vector128<short> a = Vector128.Create((short)sc[2 * g]), c = Vector128.Create((short)sc[(2 * g) + 1]);
                    Vector256.Create(a, c).Store(scx + (16 * g));
                }
            }
            else
            {
                for (int g = 0; g < 8; g++)
                {
                    new Span<short>(scx + (16 * g), 8).Fill(sc[2 * g]);
                    new Span<short>(scx + (16 * g) + 8, 8).Fill(sc[(2 * g) + 1]);
                }

                for (int i = 0; i < 16; i++)
                {
                    mt[i] = (short)(32 * sc[i]);
                }
            }

            byte* dst = u.U + (256 * sb);
            for (int h = 0; h < 2; h++)
            {
                byte* ql = blk + (64 * h);
                byte* qh = blk + 128 + (32 * h);
                byte* o = dst + (128 * h);
                if (vec)
                {
                    Vector256<byte> low4 = Vector256.Create((byte)0x0F), three = Vector256.Create((byte)3);
                    Vector256<byte> l0 = Vector256.Load(ql), l1 = Vector256.Load(ql + 32), hv = Vector256.Load(qh);
                    ((l0 & low4) | Vector256.ShiftLeft(hv & three, 4)).Store(o);
                    ((l1 & low4) | Vector256.ShiftLeft(Vector256.ShiftRightLogical(hv, 2) & three, 4)).Store(o + 32);
                    (Vector256.ShiftRightLogical(l0, 4) | Vector256.ShiftLeft(Vector256.ShiftRightLogical(hv, 4) & three, 4)).Store(o + 64);
                    (Vector256.ShiftRightLogical(l1, 4) | Vector256.ShiftLeft(Vector256.ShiftRightLogical(hv, 6) & three, 4)).Store(o + 96);
                }
                else
                {
                    for (int l = 0; l < 32; l++)
                    {
                        o[l] = (byte)((ql[l] & 0xF) | ((qh[l] & 3) << 4));
                        o[l + 32] = (byte)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4));
                        o[l + 64] = (byte)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4));
                        o[l + 96] = (byte)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4));
                    }
                }
            }
        }
    }
}
