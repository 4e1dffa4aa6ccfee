using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace MoeServer.Kernels.Native;

/// <summary>Which inner loop <see cref="Bf16Gemv"/> runs.</summary>
public enum GemvPath
{
    /// <summary>Pick the widest accelerated path.</summary>
    Auto = 0,

    /// <summary>Plain scalar loops.</summary>
    Scalar = 1,

    /// <summary>Vector256 (AVX2 + FMA).</summary>
    Vector256 = 2,

    /// <summary>Vector512 (AVX-512F).</summary>
    Vector512 = 3,
}

/// <summary>
/// Small-batch matrix–vector products over bf16 weights with fp32 activations and fp32 accumulation:
/// <c>y[m, n] = Σ_k x[m, k] · W[n, k]</c>, W row-major [N, K] (the nn.Linear layout), x [M, K], y [M, N].
/// Built for decode (M = 1..32), where the cost is streaming W from memory once.
/// </summary>
/// <remarks>
/// <para>Rows of W are split across a <see cref="WorkerPool"/>. Each task walks 4 rows at a time and, for
/// those rows, every column block of x (4 columns with Vector512, 2 with Vector256, then 1), so each weight
/// byte comes from DRAM once per call whatever M is; re-reads for later column blocks hit L1/L2.</para>
/// <para>bf16→fp32 is a 16-bit shift. The kernel loads bf16 pairs as 32-bit lanes and takes the odd element
/// with an AND and the even one with a shift (see <see cref="IVecOps{TV}"/>); x is split into even/odd
/// halves once per call to match. K need not be a multiple of anything: the tail runs scalar.</para>
/// <para>.NET 10 does not expose AVX512-BF16 (<c>vdpbf16ps</c>): there is no <c>Avx512Bf16</c> class and
/// <see cref="Avx10v2"/> has no bf16 dot product, so the bf16 ISA cannot be used from C#. At small M the
/// kernel is memory-bound and the shift/AND conversion costs nothing measurable anyway.</para>
/// </remarks>
public static unsafe class Bf16Gemv
{
    private const int FlagAccumulate = 1;
    private const int FlagSilu = 2;

    // Block epilogues: y = alpha·s, y += alpha·s, y = silu(y)·s (y holds the gate), y = silu(s_gate)·s_up.
    private const int EpStore = 0;
    private const int EpAccumulate = 1;
    private const int EpSiluCombine = 2;
    private const int EpSiluPair = 3;

    /// <summary>Below this many weights (N·K) a call runs on the calling thread alone.</summary>
    internal const long SerialThreshold = 32 * 1024;

    [ThreadStatic]
    private static float[]? t_split;

    /// <summary>Test hook: force an inner loop for calls made on this thread (<see cref="GemvPath.Auto"/> = choose by hardware).</summary>
    [ThreadStatic]
    internal static GemvPath ForcedPath;

    /// <summary>
    /// Software prefetch distance of the single-column loop, bytes ahead of the loads (0 = off). 1 KiB measured
    /// best on Zen 3 (+10% over hardware prefetch alone; 512 B and 2 KiB+ lose; prefetchnta is no better).
    /// </summary>
    internal static int PrefetchBytes { get; set; } = 1024;

    /// <summary>
    /// Up to this batch (and while x is at most <see cref="SingleRowMaxXBytes"/>) the single-row kernels run;
    /// above it the 4-row kernels, which reuse each x load across 4 rows. Zen 3, single thread: at M=2 one row
    /// gives 15-17 GB/s against 11-12 for 4 rows; at M=4 one row wins for K=1024 (43 vs 35 GFLOP/s) and loses
    /// for K=2816 (36 vs 46) where x no longer fits L1; at M=8 4 rows win.
    /// </summary>
    internal static int SingleRowMaxBatch { get; set; } = 4;

    /// <summary>Largest x (M·K·4 bytes) for which batches above 2 still take the single-row kernels.</summary>
    internal static int SingleRowMaxXBytes { get; set; } = 24 * 1024;

    /// <summary>Tasks per worker the rows are cut into (dynamic claiming balances the rest).</summary>
    internal static int ChunksPerWorker { get; set; } = 2;

    /// <summary>The inner loop chosen on this machine.</summary>
    public static GemvPath HardwarePath =>
        Vector512.IsHardwareAccelerated ? GemvPath.Vector512
        : Vector256.IsHardwareAccelerated && Fma.IsSupported ? GemvPath.Vector256
        : GemvPath.Scalar;

    private static GemvPath ActivePath => ForcedPath == GemvPath.Auto ? HardwarePath : ForcedPath;

    /// <summary>
    /// y[m, n] = alpha · Σ_k x[m, k] · W[n, k] (or y += that when <paramref name="accumulate"/>).
    /// </summary>
    /// <param name="w">Weights, bf16 bits, row-major [n, k].</param>
    /// <param name="n">Output features (rows of W).</param>
    /// <param name="k">Input features.</param>
    /// <param name="x">Activations, row-major [m, k].</param>
    /// <param name="m">Batch (tokens); tuned for 1..32, any positive value works.</param>
    /// <param name="y">Output, row-major [m, n].</param>
    /// <param name="alpha">Scale on the product (e.g. an expert's gate weight).</param>
    /// <param name="accumulate">Add into y instead of overwriting it.</param>
    /// <param name="pool">Worker pool; null means <see cref="WorkerPool.Shared"/>.</param>
    public static void Multiply(ReadOnlySpan<ushort> w, int n, int k, ReadOnlySpan<float> x, int m, Span<float> y, float alpha = 1f, bool accumulate = false, WorkerPool? pool = null)
    {
        CheckShapes(n, k, m);
        CheckLength(w.Length, (long)n * k, nameof(w));
        CheckLength(x.Length, (long)m * k, nameof(x));
        CheckLength(y.Length, (long)m * n, nameof(y));
        fixed (ushort* pw = w)
        fixed (float* px = x)
        fixed (float* py = y)
        {
            Run(pw, null, n, k, px, m, py, alpha, accumulate ? FlagAccumulate : 0, pool);
        }
    }

    /// <summary>Pointer form of <see cref="Multiply(ReadOnlySpan{ushort}, int, int, ReadOnlySpan{float}, int, Span{float}, float, bool, WorkerPool?)"/>.</summary>
    public static void Multiply(ushort* w, int n, int k, float* x, int m, float* y, float alpha = 1f, bool accumulate = false, WorkerPool? pool = null)
    {
        CheckShapes(n, k, m);
        Run(w, null, n, k, x, m, y, alpha, accumulate ? FlagAccumulate : 0, pool);
    }

    /// <summary>
    /// Fused SwiGLU front half: h[m, i] = silu(x[m]·gate[i]) · (x[m]·up[i]), reading both matrices in one pass.
    /// </summary>
    /// <param name="wGate">Gate projection, bf16 [intermediate, k].</param>
    /// <param name="wUp">Up projection, bf16 [intermediate, k].</param>
    /// <param name="intermediate">Rows of each matrix (I).</param>
    /// <param name="k">Input features.</param>
    /// <param name="x">Activations [m, k].</param>
    /// <param name="m">Batch.</param>
    /// <param name="h">Output [m, intermediate].</param>
    /// <param name="pool">Worker pool; null means <see cref="WorkerPool.Shared"/>.</param>
    public static void SiluGateUp(ReadOnlySpan<ushort> wGate, ReadOnlySpan<ushort> wUp, int intermediate, int k, ReadOnlySpan<float> x, int m, Span<float> h, WorkerPool? pool = null)
    {
        CheckShapes(intermediate, k, m);
        CheckLength(wGate.Length, (long)intermediate * k, nameof(wGate));
        CheckLength(wUp.Length, (long)intermediate * k, nameof(wUp));
        CheckLength(x.Length, (long)m * k, nameof(x));
        CheckLength(h.Length, (long)m * intermediate, nameof(h));
        fixed (ushort* pg = wGate)
        fixed (ushort* pu = wUp)
        fixed (float* px = x)
        fixed (float* ph = h)
        {
            Run(pg, pu, intermediate, k, px, m, ph, 1f, FlagSilu, pool);
        }
    }

    /// <summary>
    /// <see cref="SiluGateUp(ReadOnlySpan{ushort}, ReadOnlySpan{ushort}, int, int, ReadOnlySpan{float}, int, Span{float}, WorkerPool?)"/>
    /// over one fused [2·intermediate, k] matrix whose first <paramref name="intermediate"/> rows are the gate
    /// projection and the rest the up projection (the concatenated gate_up_proj layout).
    /// </summary>
    public static void SiluGateUp(ReadOnlySpan<ushort> wGateUp, int intermediate, int k, ReadOnlySpan<float> x, int m, Span<float> h, WorkerPool? pool = null)
    {
        CheckShapes(intermediate, k, m);
        CheckLength(wGateUp.Length, 2L * intermediate * k, nameof(wGateUp));
        long half = (long)intermediate * k;
        SiluGateUp(wGateUp[..(int)half], wGateUp.Slice((int)half, (int)half), intermediate, k, x, m, h, pool);
    }

    /// <summary>Pointer form of the two-matrix <c>SiluGateUp</c>.</summary>
    public static void SiluGateUp(ushort* wGate, ushort* wUp, int intermediate, int k, float* x, int m, float* h, WorkerPool? pool = null)
    {
        CheckShapes(intermediate, k, m);
        Run(wGate, wUp, intermediate, k, x, m, h, 1f, FlagSilu, pool);
    }

    /// <summary>Pointer form of the fused-matrix <c>SiluGateUp</c> (gate rows first, then up rows).</summary>
    public static void SiluGateUp(ushort* wGateUp, int intermediate, int k, float* x, int m, float* h, WorkerPool? pool = null)
    {
        CheckShapes(intermediate, k, m);
        Run(wGateUp, wGateUp + ((long)intermediate * k), intermediate, k, x, m, h, 1f, FlagSilu, pool);
    }

    private static void CheckShapes(int n, int k, int m)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(n);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(k);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(m);
    }

    private static void CheckLength(int actual, long needed, string name)
    {
        if (actual < needed)
        {
            throw new ArgumentException($"Span holds {actual} elements; the shapes need {needed}.", name);
        }
    }

    private static void Run(ushort* w0, ushort* w1, int rows, int k, float* x, int m, float* y, float alpha, int flags, WorkerPool? pool)
    {
        GemvPath path = ActivePath;
        int lanes = path switch
        {
            GemvPath.Vector512 => Vector512<float>.Count,
            GemvPath.Vector256 => Vector256<float>.Count,
            _ => 0,
        };

        // Vector part of K: whole steps of 2·lanes bf16; the rest runs scalar.
        int half = lanes == 0 ? 0 : k / (2 * lanes) * lanes;
        int kv = 2 * half;
        float* split = null;
        float[]? splitArray = null;
        if (half > 0)
        {
            long need = (long)m * kv;
            splitArray = t_split;
            if (splitArray is null || splitArray.Length < need)
            {
                splitArray = GC.AllocateUninitializedArray<float>((int)Math.Max(need, 4096), pinned: true);
                t_split = splitArray;
            }

            split = (float*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(splitArray));
            for (int c = 0; c < m; c++)
            {
                SplitEvenOdd(x + ((long)c * k), split + ((long)c * kv), half);
            }
        }

        int group = (flags & FlagSilu) != 0 ? 2 : 4;
        var job = new Job
        {
            W0 = w0,
            W1 = w1,
            X = x,
            Split = split,
            Y = y,
            Rows = rows,
            K = k,
            M = m,
            Half = half,
            Alpha = alpha,
            Flags = flags,
            Path = (int)path,
        };

        pool ??= WorkerPool.Shared;
        long weights = (long)rows * k * (w1 == null ? 1 : 2);
        int groups = (rows + group - 1) / group;
        int tasks = weights <= SerialThreshold ? 1 : Math.Min(groups, pool.WorkerCount * ChunksPerWorker);
        int groupsPerTask = (groups + tasks - 1) / tasks;
        job.ChunkRows = groupsPerTask * group;
        tasks = (groups + groupsPerTask - 1) / groupsPerTask;
        if (tasks == 1)
        {
            RunChunk(0, (nint)(&job));
        }
        else
        {
            pool.Parallel(tasks, &RunChunk, (nint)(&job));
        }

        GC.KeepAlive(splitArray);
    }

    /// <summary>Writes x[2j] to dst[j] and x[2j+1] to dst[half + j] for j &lt; half.</summary>
    private static void SplitEvenOdd(float* x, float* dst, int half)
    {
        int j = 0;
        if (Avx2.IsSupported)
        {
            for (; j + 8 <= half; j += 8)
            {
                Vector256<float> a = Avx.LoadVector256(x + (2 * j));
                Vector256<float> b = Avx.LoadVector256(x + (2 * j) + 8);

                // Per 128-bit lane: [a0 a2 b0 b2 | a4 a6 b4 b6]; then fix the lane order with a 64-bit permute.
                Vector256<float> even = Avx.Shuffle(a, b, 0b10_00_10_00);
                Vector256<float> odd = Avx.Shuffle(a, b, 0b11_01_11_01);
                Avx.Store(dst + j, Avx2.Permute4x64(even.AsDouble(), 0b11_01_10_00).AsSingle());
                Avx.Store(dst + half + j, Avx2.Permute4x64(odd.AsDouble(), 0b11_01_10_00).AsSingle());
            }
        }

        for (; j < half; j++)
        {
            dst[j] = x[2 * j];
            dst[half + j] = x[(2 * j) + 1];
        }
    }

    private static void RunChunk(int chunk, nint jobPtr)
    {
        ref Job job = ref Unsafe.AsRef<Job>((void*)jobPtr);
        int r0 = chunk * job.ChunkRows;
        int r1 = Math.Min(job.Rows, r0 + job.ChunkRows);
        switch ((GemvPath)job.Path)
        {
            case GemvPath.Vector512:
                Rows<V512Ops, Vector512<float>>(ref job, r0, r1);
                break;
            default:
                // The scalar path runs with Half = 0: the vector loops do nothing and the tail covers all of K.
                Rows<V256Ops, Vector256<float>>(ref job, r0, r1);
                break;
        }
    }

    private static void Rows<TOps, TV>(ref Job job, int r0, int r1)
        where TOps : struct, IVecOps<TV>
        where TV : struct
    {
        int m = job.M;
        long xBytes = (long)m * 2 * job.Half * sizeof(float);

        // Single-row kernels re-read x for every row, so they pay off while x for the batch sits in L1.
        bool singleRow = m <= 2 || (m <= SingleRowMaxBatch && xBytes <= SingleRowMaxXBytes);
        if ((job.Flags & FlagSilu) == 0)
        {
            Block<TOps, TV>(ref job, job.W0, null, r0, r1, singleRow, (job.Flags & FlagAccumulate) != 0 ? EpAccumulate : EpStore);
        }
        else if (singleRow)
        {
            // Two sweeps over the chunk, each one contiguous stream: gate rows into h, then up rows, combining
            // in place. Interleaving 2 gate and 2 up rows instead costs ~10% of bandwidth at M=1.
            Block<TOps, TV>(ref job, job.W0, null, r0, r1, true, EpStore);
            Block<TOps, TV>(ref job, job.W1, null, r0, r1, true, EpSiluCombine);
        }
        else
        {
            Block<TOps, TV>(ref job, job.W0, job.W1, r0, r1, false, EpSiluPair);
        }
    }

    /// <summary>
    /// Rows [r0, r1) of one product, 4 rows at a time (2 gate + 2 up rows for <see cref="EpSiluPair"/>), every
    /// column of x for each row block, then the epilogue <paramref name="ep"/>.
    /// </summary>
    private static void Block<TOps, TV>(ref Job job, ushort* wA, ushort* wB, int r0, int r1, bool singleRow, int ep)
        where TOps : struct, IVecOps<TV>
        where TV : struct
    {
        float* s = stackalloc float[16];
        ushort** p = stackalloc ushort*[4];
        int k = job.K;
        int m = job.M;
        int half = job.Half;
        int kv = 2 * half;
        bool pair = ep == EpSiluPair;
        int group = pair ? 2 : 4;
        for (int r = r0; r < r1; r += group)
        {
            int valid = Math.Min(group, r1 - r);
            if (pair)
            {
                ushort* g = wA + ((long)r * k);
                ushort* u = wB + ((long)r * k);
                p[0] = g;
                p[1] = valid > 1 ? g + k : g;
                p[2] = u;
                p[3] = valid > 1 ? u + k : u;
            }
            else
            {
                ushort* w = wA + ((long)r * k);
                p[0] = w;
                p[1] = valid > 1 ? w + k : w;
                p[2] = valid > 2 ? w + (2 * k) : w;
                p[3] = valid > 3 ? w + (3 * k) : w;
            }

            for (int c = 0; c < m;)
            {
                float* xs = job.Split + ((long)c * kv);
                int mb;
                if (half == 0)
                {
                    mb = 1;
                    s[0] = s[1] = s[2] = s[3] = 0f;
                }
                else if (singleRow || m - c < 2)
                {
                    // Small batch: one row at a time, so each thread reads one sequential stream. Measured on
                    // Zen 3: 4 interleaved row streams reach ~60% of read bandwidth at K=1024 (the prefetcher
                    // re-trains at every 4-row block), one stream + software prefetch ~90%.
                    mb = m - c >= 4 ? 4 : m - c >= 2 ? 2 : 1;
                    for (int t = 0; t < 4; t++)
                    {
                        // Pair blocks are (g_i, g_i+1, u_i, u_i+1): with one valid row, slots 1 and 3 are unused.
                        bool live = pair ? (t & 1) < valid : t < valid;
                        if (!live)
                        {
                            continue;
                        }

                        if (mb == 4)
                        {
                            Dot1x4<TOps, TV>(p[t], xs, kv, half, s + t);
                        }
                        else if (mb == 2)
                        {
                            Dot1x2<TOps, TV>(p[t], xs, kv, half, s + t);
                        }
                        else
                        {
                            s[t] = Dot1x1<TOps, TV>(p[t], xs, half);
                        }
                    }
                }
                else if (TOps.Count == 16 && m - c >= 4)
                {
                    mb = 4;
                    Dot4x4<TOps, TV>(p[0], p[1], p[2], p[3], xs, kv, half, s);
                }
                else
                {
                    mb = 2;
                    Dot4x2<TOps, TV>(p[0], p[1], p[2], p[3], xs, kv, half, s);
                }

                for (int cc = 0; cc < mb; cc++)
                {
                    float* xRow = job.X + ((long)(c + cc) * k);
                    float* sc = s + (4 * cc);
                    if (kv < k)
                    {
                        for (int t = 0; t < 4; t++)
                        {
                            sc[t] += TailDot(p[t] + kv, xRow + kv, k - kv);
                        }
                    }

                    float* yRow = job.Y + ((long)(c + cc) * job.Rows) + r;
                    switch (ep)
                    {
                        case EpStore:
                            for (int t = 0; t < valid; t++)
                            {
                                yRow[t] = job.Alpha * sc[t];
                            }

                            break;
                        case EpAccumulate:
                            for (int t = 0; t < valid; t++)
                            {
                                yRow[t] += job.Alpha * sc[t];
                            }

                            break;
                        case EpSiluCombine:
                            for (int t = 0; t < valid; t++)
                            {
                                yRow[t] = Silu(yRow[t]) * sc[t];
                            }

                            break;
                        default:
                            for (int t = 0; t < valid; t++)
                            {
                                yRow[t] = Silu(sc[t]) * sc[2 + t];
                            }

                            break;
                    }
                }

                c += mb;
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Silu(float g) => g / (1f + MathF.Exp(-g));

    private static float TailDot(ushort* w, float* x, int len)
    {
        float s = 0f;
        for (int i = 0; i < len; i++)
        {
            s += x[i] * BitConverter.Int32BitsToSingle(w[i] << 16);
        }

        return s;
    }

    /// <summary>
    /// One row × one column, unrolled ×4 with 4 accumulators and a software prefetch: a single sequential
    /// stream per thread, which the hardware prefetcher follows better than 4 interleaved row streams.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Dot1x1<TOps, TV>(ushort* w, float* xe, int half)
        where TOps : struct, IVecOps<TV>
        where TV : struct
    {
        float* xo = xe + half;
        TV a0 = TOps.Zero, b0 = TOps.Zero, a1 = TOps.Zero, b1 = TOps.Zero;
        int n = TOps.Count;
        int j = 0;
        int pf = Sse.IsSupported ? PrefetchBytes / sizeof(ushort) : 0;
        for (; j + (4 * n) <= half; j += 4 * n)
        {
            // 4 vectors = 128 B (Vector256) or 256 B (Vector512) of weights: one prefetch per 64-byte line.
            ushort* q = w + (2 * j);
            if (pf > 0 && Sse.IsSupported)
            {
                Sse.Prefetch0(q + pf);
                Sse.Prefetch0(q + pf + 32);
                if (n == 16)
                {
                    Sse.Prefetch0(q + pf + 64);
                    Sse.Prefetch0(q + pf + 96);
                }
            }

            TV p0 = TOps.LoadBf16Pairs(q);
            TV p1 = TOps.LoadBf16Pairs(q + (2 * n));
            TV p2 = TOps.LoadBf16Pairs(q + (4 * n));
            TV p3 = TOps.LoadBf16Pairs(q + (6 * n));
            a0 = TOps.Fma(TOps.Even(p0), TOps.Load(xe + j), a0);
            b0 = TOps.Fma(TOps.Odd(p0), TOps.Load(xo + j), b0);
            a1 = TOps.Fma(TOps.Even(p1), TOps.Load(xe + j + n), a1);
            b1 = TOps.Fma(TOps.Odd(p1), TOps.Load(xo + j + n), b1);
            a0 = TOps.Fma(TOps.Even(p2), TOps.Load(xe + j + (2 * n)), a0);
            b0 = TOps.Fma(TOps.Odd(p2), TOps.Load(xo + j + (2 * n)), b0);
            a1 = TOps.Fma(TOps.Even(p3), TOps.Load(xe + j + (3 * n)), a1);
            b1 = TOps.Fma(TOps.Odd(p3), TOps.Load(xo + j + (3 * n)), b1);
        }

        for (; j + (2 * n) <= half; j += 2 * n)
        {
            if (pf > 0 && Sse.IsSupported)
            {
                Sse.Prefetch0(w + (2 * j) + pf);
                if (n == 16)
                {
                    Sse.Prefetch0(w + (2 * j) + pf + 32);
                }
            }

            TV p0 = TOps.LoadBf16Pairs(w + (2 * j));
            TV p1 = TOps.LoadBf16Pairs(w + (2 * j) + (2 * n));
            a0 = TOps.Fma(TOps.Even(p0), TOps.Load(xe + j), a0);
            b0 = TOps.Fma(TOps.Odd(p0), TOps.Load(xo + j), b0);
            a1 = TOps.Fma(TOps.Even(p1), TOps.Load(xe + j + n), a1);
            b1 = TOps.Fma(TOps.Odd(p1), TOps.Load(xo + j + n), b1);
        }

        if (j < half)
        {
            TV p0 = TOps.LoadBf16Pairs(w + (2 * j));
            a0 = TOps.Fma(TOps.Even(p0), TOps.Load(xe + j), a0);
            b0 = TOps.Fma(TOps.Odd(p0), TOps.Load(xo + j), b0);
        }

        return TOps.Sum(TOps.Add(TOps.Add(a0, b0), TOps.Add(a1, b1)));
    }

    /// <summary>One row × 2 columns (even/odd accumulators: 4 chains, unrolled ×2 to 8).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot1x2<TOps, TV>(ushort* w, float* xe, int xStride, int half, float* s)
        where TOps : struct, IVecOps<TV>
        where TV : struct
    {
        float* e0 = xe, o0 = xe + half, e1 = xe + xStride, o1 = xe + xStride + half;
        TV a0 = TOps.Zero, b0 = TOps.Zero, a1 = TOps.Zero, b1 = TOps.Zero;
        TV c0 = TOps.Zero, d0 = TOps.Zero, c1 = TOps.Zero, d1 = TOps.Zero;
        int n = TOps.Count;
        int pf = Sse.IsSupported ? PrefetchBytes / sizeof(ushort) : 0;
        int j = 0;
        for (; j + (2 * n) <= half; j += 2 * n)
        {
            ushort* q = w + (2 * j);
            if (pf > 0 && Sse.IsSupported)
            {
                Sse.Prefetch0(q + pf);
                if (n == 16)
                {
                    Sse.Prefetch0(q + pf + 32);
                }
            }

            TV p = TOps.LoadBf16Pairs(q);
            TV we = TOps.Even(p), wo = TOps.Odd(p);
            a0 = TOps.Fma(we, TOps.Load(e0 + j), a0);
            b0 = TOps.Fma(wo, TOps.Load(o0 + j), b0);
            a1 = TOps.Fma(we, TOps.Load(e1 + j), a1);
            b1 = TOps.Fma(wo, TOps.Load(o1 + j), b1);
            p = TOps.LoadBf16Pairs(q + (2 * n));
            we = TOps.Even(p);
            wo = TOps.Odd(p);
            c0 = TOps.Fma(we, TOps.Load(e0 + j + n), c0);
            d0 = TOps.Fma(wo, TOps.Load(o0 + j + n), d0);
            c1 = TOps.Fma(we, TOps.Load(e1 + j + n), c1);
            d1 = TOps.Fma(wo, TOps.Load(o1 + j + n), d1);
        }

        if (j < half)
        {
            TV p = TOps.LoadBf16Pairs(w + (2 * j));
            TV we = TOps.Even(p), wo = TOps.Odd(p);
            a0 = TOps.Fma(we, TOps.Load(e0 + j), a0);
            b0 = TOps.Fma(wo, TOps.Load(o0 + j), b0);
            a1 = TOps.Fma(we, TOps.Load(e1 + j), a1);
            b1 = TOps.Fma(wo, TOps.Load(o1 + j), b1);
        }

        s[0] = TOps.Sum(TOps.Add(TOps.Add(a0, b0), TOps.Add(c0, d0)));
        s[4] = TOps.Sum(TOps.Add(TOps.Add(a1, b1), TOps.Add(c1, d1)));
    }

    /// <summary>One row × 4 columns (even/odd accumulators: 8 chains).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot1x4<TOps, TV>(ushort* w, float* xe, int xStride, int half, float* s)
        where TOps : struct, IVecOps<TV>
        where TV : struct
    {
        float* x0 = xe, x1 = xe + xStride, x2 = xe + (2 * xStride), x3 = xe + (3 * xStride);
        TV a0 = TOps.Zero, b0 = TOps.Zero, a1 = TOps.Zero, b1 = TOps.Zero;
        TV a2 = TOps.Zero, b2 = TOps.Zero, a3 = TOps.Zero, b3 = TOps.Zero;
        int n = TOps.Count;
        int pf = Sse.IsSupported ? PrefetchBytes / sizeof(ushort) : 0;
        for (int j = 0; j < half; j += n)
        {
            ushort* q = w + (2 * j);
            if (pf > 0 && Sse.IsSupported && (n == 16 || (j & 8) == 0))
            {
                Sse.Prefetch0(q + pf);
            }

            TV p = TOps.LoadBf16Pairs(q);
            TV we = TOps.Even(p), wo = TOps.Odd(p);
            a0 = TOps.Fma(we, TOps.Load(x0 + j), a0);
            b0 = TOps.Fma(wo, TOps.Load(x0 + half + j), b0);
            a1 = TOps.Fma(we, TOps.Load(x1 + j), a1);
            b1 = TOps.Fma(wo, TOps.Load(x1 + half + j), b1);
            a2 = TOps.Fma(we, TOps.Load(x2 + j), a2);
            b2 = TOps.Fma(wo, TOps.Load(x2 + half + j), b2);
            a3 = TOps.Fma(we, TOps.Load(x3 + j), a3);
            b3 = TOps.Fma(wo, TOps.Load(x3 + half + j), b3);
        }

        s[0] = TOps.Sum(TOps.Add(a0, b0));
        s[4] = TOps.Sum(TOps.Add(a1, b1));
        s[8] = TOps.Sum(TOps.Add(a2, b2));
        s[12] = TOps.Sum(TOps.Add(a3, b3));
    }

    /// <summary>4 rows × 2 columns (8 accumulators).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot4x2<TOps, TV>(ushort* w0, ushort* w1, ushort* w2, ushort* w3, float* xe, int xStride, int half, float* s)
        where TOps : struct, IVecOps<TV>
        where TV : struct
    {
        float* xe0 = xe, xo0 = xe + half, xe1 = xe + xStride, xo1 = xe + xStride + half;
        TV a00 = TOps.Zero, a01 = TOps.Zero, a10 = TOps.Zero, a11 = TOps.Zero;
        TV a20 = TOps.Zero, a21 = TOps.Zero, a30 = TOps.Zero, a31 = TOps.Zero;
        for (int j = 0; j < half; j += TOps.Count)
        {
            TV e0 = TOps.Load(xe0 + j), o0 = TOps.Load(xo0 + j);
            TV e1 = TOps.Load(xe1 + j), o1 = TOps.Load(xo1 + j);
            int q = 2 * j;
            TV p = TOps.LoadBf16Pairs(w0 + q);
            TV we = TOps.Even(p), wo = TOps.Odd(p);
            a00 = TOps.Fma(wo, o0, TOps.Fma(we, e0, a00));
            a01 = TOps.Fma(wo, o1, TOps.Fma(we, e1, a01));
            p = TOps.LoadBf16Pairs(w1 + q);
            we = TOps.Even(p);
            wo = TOps.Odd(p);
            a10 = TOps.Fma(wo, o0, TOps.Fma(we, e0, a10));
            a11 = TOps.Fma(wo, o1, TOps.Fma(we, e1, a11));
            p = TOps.LoadBf16Pairs(w2 + q);
            we = TOps.Even(p);
            wo = TOps.Odd(p);
            a20 = TOps.Fma(wo, o0, TOps.Fma(we, e0, a20));
            a21 = TOps.Fma(wo, o1, TOps.Fma(we, e1, a21));
            p = TOps.LoadBf16Pairs(w3 + q);
            we = TOps.Even(p);
            wo = TOps.Odd(p);
            a30 = TOps.Fma(wo, o0, TOps.Fma(we, e0, a30));
            a31 = TOps.Fma(wo, o1, TOps.Fma(we, e1, a31));
        }

        s[0] = TOps.Sum(a00);
        s[1] = TOps.Sum(a10);
        s[2] = TOps.Sum(a20);
        s[3] = TOps.Sum(a30);
        s[4] = TOps.Sum(a01);
        s[5] = TOps.Sum(a11);
        s[6] = TOps.Sum(a21);
        s[7] = TOps.Sum(a31);
    }

    /// <summary>4 rows × 4 columns (16 accumulators; for the 32-register AVX-512 file).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot4x4<TOps, TV>(ushort* w0, ushort* w1, ushort* w2, ushort* w3, float* xe, int xStride, int half, float* s)
        where TOps : struct, IVecOps<TV>
        where TV : struct
    {
        float* x0 = xe, x1 = xe + xStride, x2 = xe + (2 * xStride), x3 = xe + (3 * xStride);
        TV a00 = TOps.Zero, a01 = TOps.Zero, a02 = TOps.Zero, a03 = TOps.Zero;
        TV a10 = TOps.Zero, a11 = TOps.Zero, a12 = TOps.Zero, a13 = TOps.Zero;
        TV a20 = TOps.Zero, a21 = TOps.Zero, a22 = TOps.Zero, a23 = TOps.Zero;
        TV a30 = TOps.Zero, a31 = TOps.Zero, a32 = TOps.Zero, a33 = TOps.Zero;
        for (int j = 0; j < half; j += TOps.Count)
        {
            TV e0 = TOps.Load(x0 + j), o0 = TOps.Load(x0 + half + j);
            TV e1 = TOps.Load(x1 + j), o1 = TOps.Load(x1 + half + j);
            TV e2 = TOps.Load(x2 + j), o2 = TOps.Load(x2 + half + j);
            TV e3 = TOps.Load(x3 + j), o3 = TOps.Load(x3 + half + j);
            int q = 2 * j;
            TV p = TOps.LoadBf16Pairs(w0 + q);
            TV we = TOps.Even(p), wo = TOps.Odd(p);
            a00 = TOps.Fma(wo, o0, TOps.Fma(we, e0, a00));
            a01 = TOps.Fma(wo, o1, TOps.Fma(we, e1, a01));
            a02 = TOps.Fma(wo, o2, TOps.Fma(we, e2, a02));
            a03 = TOps.Fma(wo, o3, TOps.Fma(we, e3, a03));
            p = TOps.LoadBf16Pairs(w1 + q);
            we = TOps.Even(p);
            wo = TOps.Odd(p);
            a10 = TOps.Fma(wo, o0, TOps.Fma(we, e0, a10));
            a11 = TOps.Fma(wo, o1, TOps.Fma(we, e1, a11));
            a12 = TOps.Fma(wo, o2, TOps.Fma(we, e2, a12));
            a13 = TOps.Fma(wo, o3, TOps.Fma(we, e3, a13));
            p = TOps.LoadBf16Pairs(w2 + q);
            we = TOps.Even(p);
            wo = TOps.Odd(p);
            a20 = TOps.Fma(wo, o0, TOps.Fma(we, e0, a20));
            a21 = TOps.Fma(wo, o1, TOps.Fma(we, e1, a21));
            a22 = TOps.Fma(wo, o2, TOps.Fma(we, e2, a22));
            a23 = TOps.Fma(wo, o3, TOps.Fma(we, e3, a23));
            p = TOps.LoadBf16Pairs(w3 + q);
            we = TOps.Even(p);
            wo = TOps.Odd(p);
            a30 = TOps.Fma(wo, o0, TOps.Fma(we, e0, a30));
            a31 = TOps.Fma(wo, o1, TOps.Fma(we, e1, a31));
            a32 = TOps.Fma(wo, o2, TOps.Fma(we, e2, a32));
            a33 = TOps.Fma(wo, o3, TOps.Fma(we, e3, a33));
        }

        s[0] = TOps.Sum(a00);
        s[1] = TOps.Sum(a10);
        s[2] = TOps.Sum(a20);
        s[3] = TOps.Sum(a30);
        s[4] = TOps.Sum(a01);
        s[5] = TOps.Sum(a11);
        s[6] = TOps.Sum(a21);
        s[7] = TOps.Sum(a31);
        s[8] = TOps.Sum(a02);
        s[9] = TOps.Sum(a12);
        s[10] = TOps.Sum(a22);
        s[11] = TOps.Sum(a32);
        s[12] = TOps.Sum(a03);
        s[13] = TOps.Sum(a13);
        s[14] = TOps.Sum(a23);
        s[15] = TOps.Sum(a33);
    }

    /// <summary>Everything a task needs; lives on the calling thread's stack for the duration of the call.</summary>
    private struct Job
    {
        public ushort* W0;
        public ushort* W1;
        public float* X;
        public float* Split;
        public float* Y;
        public int Rows;
        public int K;
        public int M;
        public int Half;
        public int ChunkRows;
        public float Alpha;
        public int Flags;
        public int Path;
    }
}
