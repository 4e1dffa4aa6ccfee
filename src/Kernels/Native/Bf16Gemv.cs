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
/// <para>Rows of W are split across a <see cref="WorkerPool"/>. bf16→fp32 is a 16-bit shift: the kernels load
/// bf16 pairs as 32-bit lanes and take the odd element with an AND and the even one with a shift (see
/// <see cref="IVecOps{TV}"/>); x is split into even/odd halves once per call to match. K need not be a multiple
/// of anything: the tail runs scalar.</para>
/// <para>M ≤ 2 (and small x at M ≤ 4) runs single-row kernels: one sequential weight stream per thread with
/// software prefetch, bandwidth-bound. Larger batches run a register-blocked kernel (<see cref="Tiled"/>): a
/// 2-row × 4-column tile of 8 vector accumulators over a K block, so each weight load (converted once) feeds 8
/// FMAs and each x load 2, with horizontal sums only at the end of K. Columns go in balanced groups of ≤ 4 and K
/// in blocks such that a group's x slice (≤ 16 KiB) stays in L1 while a block of rows (64 KiB and up) streams
/// past it; the block's weights come from DRAM once per call, software-prefetched by the previous block's later
/// groups, and from L2 for the other groups.</para>
/// <para>.NET 10 does not expose AVX512-BF16 (<c>vdpbf16ps</c>): there is no <c>Avx512Bf16</c> class and
/// <see cref="Avx10v2"/> has no bf16 dot product, so the bf16 ISA cannot be used from C#.</para>
/// </remarks>
public static unsafe class Bf16Gemv
{
    private const int FlagAccumulate = 1;
    private const int FlagSilu = 2;

    // Single-row epilogues: y = alpha·s, y += alpha·s, y = silu(y)·s (y holds the gate).
    private const int EpStore = 0;
    private const int EpAccumulate = 1;
    private const int EpSiluCombine = 2;

    /// <summary>Below this many weights (N·K) a call runs on the calling thread alone.</summary>
    internal const long SerialThreshold = 32 * 1024;

    [ThreadStatic]
    private static float[]? t_split;

    [ThreadStatic]
    private static float[]? t_tileScratch;

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
    /// above it the register-blocked tile kernel. Zen 3, 2 threads, over DRAM: at K = 1024 one row wins at M = 3
    /// (72 vs 67 GFLOP/s) and M = 4 (98 vs 83), both bandwidth-bound; at K = 2816 x no longer fits L1 and the tile
    /// kernel runs (84 and 106 GFLOP/s).
    /// </summary>
    internal static int SingleRowMaxBatch { get; set; } = 4;

    /// <summary>Largest x (M·K·4 bytes) for which batches above 2 still take the single-row kernels.</summary>
    internal static int SingleRowMaxXBytes { get; set; } = 24 * 1024;

    /// <summary>Tasks per worker the rows are cut into (dynamic claiming balances the rest).</summary>
    internal static int ChunksPerWorker { get; set; } = 2;

    /// <summary>
    /// Most columns of x per group in the tiled kernel, 1..4 (one 2x4 tile): a row block's weights are re-read
    /// from L2 once per group. Zen 3, 2 threads: 4-column groups (x for K = 1024 fits L1 unblocked) beat 8-column
    /// groups of two tiles by 8-10% at K = 1024, M = 8..32, once groups 1.. prefetch the next row block.
    /// </summary>
    internal static int TileGroupColumns { get; set; } = 4;

    /// <summary>
    /// Bytes of x (one column group × one K block, even and odd halves) the tiled kernel keeps hot in L1; K is split
    /// into balanced blocks when a group's x is larger. Zen 3, K = 2816: 16 KiB blocks beat 24 KiB and unblocked
    /// (45 KiB) at M = 4 (93 vs 90 and 76 GFLOP/s) and tie at M = 8.
    /// </summary>
    internal static int TileXSliceBytes { get; set; } = 16 * 1024;

    /// <summary>
    /// Weight bytes per row block in the tiled kernel (rows = this / (2·K), even, 2..64; the fused gate/up counts
    /// both matrices): the block is swept once per column group, so it and the next one, being prefetched, must sit
    /// in L2 beside x. 64 KiB: 32 rows at K = 1024, 10 at K = 2816.
    /// </summary>
    internal static int TileBlockBytes { get; set; } = 64 * 1024;

    /// <summary>
    /// Each row block reads all of x once per pass over its groups; when x is large the block grows to up to half
    /// of x (at most this many bytes) so that x traffic stays below the weights'. K = 2816, M = 32 (x = 352 KiB):
    /// 128-192 KiB blocks ran ~4% faster than 64 KiB.
    /// </summary>
    internal static int TileBlockBytesMax { get; set; } = 160 * 1024;

    /// <summary>
    /// With two or more column groups, groups 1.. prefetch the whole next row block (spread evenly over their
    /// work); otherwise only row pairs <see cref="TilePrefetchPairs"/> ahead are prefetched. Zen 3, K = 1024, M = 8:
    /// +10% (G = 4), and the 8-10% from narrower groups depends on it.
    /// </summary>
    internal static bool TileBlockPrefetch { get; set; } = true;

    /// <summary>
    /// How many row pairs ahead the tiled kernel prefetches weights where the next-block prefetch does not cover
    /// them (0 = no software prefetch at all: about -40% at M = 8 over DRAM; 1..3 measure alike).
    /// </summary>
    internal static int TilePrefetchPairs { get; set; } = 2;

    /// <summary>
    /// Floats of padding between the split columns of x: a stride that is a multiple of 4 KiB (K = 1024, 2048)
    /// maps every column to the same L1 sets, and the 8-way L1 then thrashes (-15% at K = 1024, M = 8).
    /// </summary>
    private const int XPadFloats = 48;

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
        int xStride = kv + XPadFloats;
        float* split = null;
        float[]? splitArray = null;
        if (half > 0)
        {
            long need = ((long)m * xStride) + 16;
            splitArray = t_split;
            if (splitArray is null || splitArray.Length < need)
            {
                splitArray = GC.AllocateUninitializedArray<float>((int)Math.Max(need, 4096), pinned: true);
                t_split = splitArray;
            }

            // 64-byte aligned, so every vector load of x is aligned too (the stride is a multiple of 16 floats).
            split = (float*)(((nint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(splitArray)) + 63) & ~(nint)63);
            for (int c = 0; c < m; c++)
            {
                SplitEvenOdd(x + ((long)c * k), split + ((long)c * xStride), half);
            }
        }

        var job = new Job
        {
            W0 = w0,
            W1 = w1,
            X = x,
            Split = split,
            XStride = xStride,
            Y = y,
            Rows = rows,
            K = k,
            M = m,
            Half = half,
            Alpha = alpha,
            Flags = flags,
            Path = (int)path,
        };

        long xBytes = (long)m * kv * sizeof(float);
        job.Tiled = half > 0 && !(m <= 2 || (m <= SingleRowMaxBatch && xBytes <= SingleRowMaxXBytes));
        if (job.Tiled)
        {
            // Balanced column groups of at most TileGroupColumns (≤ 4, one 2x4 tile), then K blocks that keep the
            // group's x slice within TileXSliceBytes, balanced and a whole number of vectors.
            int groupMax = Math.Clamp(TileGroupColumns, 1, 4);
            job.Groups = (m + groupMax - 1) / groupMax;
            int widest = (m + job.Groups - 1) / job.Groups;
            int maxBlock = Math.Max(lanes, TileXSliceBytes / (2 * sizeof(float) * widest) / lanes * lanes);
            int blocks = (half + maxBlock - 1) / maxBlock;
            job.KBlock = ((half + blocks - 1) / blocks + lanes - 1) / lanes * lanes;
        }

        // Chunks are whole row groups: 4 rows (2 for the fused gate/up, whose chunks cover both matrices).
        int group = (flags & FlagSilu) != 0 ? 2 : 4;
        pool ??= WorkerPool.Shared;
        long weights = (long)rows * k * (w1 == null ? 1 : 2);
        int rowGroups = (rows + group - 1) / group;
        int tasks = weights <= SerialThreshold ? 1 : Math.Min(rowGroups, pool.WorkerCount * ChunksPerWorker);
        int groupsPerTask = (rowGroups + tasks - 1) / tasks;
        job.ChunkRows = groupsPerTask * group;
        tasks = (rowGroups + groupsPerTask - 1) / groupsPerTask;
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
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
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
        if (job.Tiled)
        {
            Tiled<TOps, TV>(ref job, r0, r1);
        }
        else if ((job.Flags & FlagSilu) == 0)
        {
            Block<TOps, TV>(ref job, job.W0, r0, r1, (job.Flags & FlagAccumulate) != 0 ? EpAccumulate : EpStore);
        }
        else
        {
            // Two sweeps over the chunk, each one contiguous stream: gate rows into h, then up rows, combining
            // in place. Interleaving 2 gate and 2 up rows instead costs ~10% of bandwidth at M=1.
            Block<TOps, TV>(ref job, job.W0, r0, r1, EpStore);
            Block<TOps, TV>(ref job, job.W1, r0, r1, EpSiluCombine);
        }
    }

    /// <summary>
    /// Rows [r0, r1) of one product with the single-row kernels (small batch, or the scalar path with Half = 0):
    /// 4 rows at a time, each row against every column of x (4, 2, then 1 at a time), then the epilogue
    /// <paramref name="ep"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Block<TOps, TV>(ref Job job, ushort* wA, int r0, int r1, int ep)
        where TOps : struct, IVecOps<TV>
        where TV : struct
    {
        float* s = stackalloc float[16];
        int k = job.K;
        int m = job.M;
        int half = job.Half;
        int xStride = job.XStride;
        int kv = 2 * half;
        for (int r = r0; r < r1; r += 4)
        {
            int valid = Math.Min(4, r1 - r);
            ushort* w = wA + ((long)r * k);
            for (int c = 0; c < m;)
            {
                float* xs = job.Split + ((long)c * xStride);
                int mb;
                if (half == 0)
                {
                    mb = 1;
                    s[0] = s[1] = s[2] = s[3] = 0f;
                }
                else
                {
                    // One row at a time, so each thread reads one sequential stream. Measured on Zen 3: 4
                    // interleaved row streams reach ~60% of read bandwidth at K=1024 (the prefetcher re-trains at
                    // every 4-row block), one stream + software prefetch ~90%.
                    mb = m - c >= 4 ? 4 : m - c >= 2 ? 2 : 1;
                    for (int t = 0; t < valid; t++)
                    {
                        ushort* wr = w + ((long)t * k);
                        if (mb == 4)
                        {
                            Dot1x4<TOps, TV>(wr, xs, xStride, half, s + t);
                        }
                        else if (mb == 2)
                        {
                            Dot1x2<TOps, TV>(wr, xs, xStride, half, s + t);
                        }
                        else
                        {
                            s[t] = Dot1x1<TOps, TV>(wr, xs, half);
                        }
                    }
                }

                for (int cc = 0; cc < mb; cc++)
                {
                    float* xRow = job.X + ((long)(c + cc) * k);
                    float* sc = s + (4 * cc);
                    if (kv < k)
                    {
                        for (int t = 0; t < valid; t++)
                        {
                            sc[t] += TailDot(w + ((long)t * k) + kv, xRow + kv, k - kv);
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
                        default:
                            for (int t = 0; t < valid; t++)
                            {
                                yRow[t] = Silu(yRow[t]) * sc[t];
                            }

                            break;
                    }
                }

                c += mb;
            }
        }
    }

    /// <summary>
    /// Rows [r0, r1) with the register-blocked kernel. Loop nest: row blocks (<see cref="TileBlockBytes"/>; for the
    /// fused gate/up, the block's gate rows then its up rows) → column groups of ≤ 4 → K blocks → one
    /// <see cref="TilePairs{TOps, TV, TC, TP}"/> call per matrix, which walks the block's row pairs. Partial
    /// accumulators live in a per-thread scratch between K blocks; the last K block reduces them into a staging
    /// tile [column][row], which the epilogue turns into y.
    /// </summary>
    /// <remarks>
    /// Prefetch: the first group of a chunk's first block (and every block when there is only one group) fetches
    /// row pairs <see cref="TilePrefetchPairs"/> ahead; with two or more groups, groups 1.. fetch the whole next
    /// block, evenly spread over their work, so group 0 of every later block finds its weights in L2 and DRAM
    /// sees a steady stream rather than a burst per block.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tiled<TOps, TV>(ref Job job, int r0, int r1)
        where TOps : struct, IVecOps<TV>
        where TV : struct
    {
        int n = TOps.Count;
        int k = job.K;
        int m = job.M;
        int half = job.Half;
        int kv = 2 * half;
        int sets = (job.Flags & FlagSilu) != 0 ? 2 : 1;
        long blockBytes = Math.Max(TileBlockBytes, Math.Min(TileBlockBytesMax, (long)m * kv * sizeof(float) / 2));
        int blockRows = (int)Math.Clamp(blockBytes / ((long)k * sizeof(ushort) * sets), 2, 64) & ~1;
        int groups = job.Groups;
        int kBlock = job.KBlock;
        int prefetchPairs = TilePrefetchPairs;

        // Scratch: accumulators (8 vectors per row pair) and the staging tile, per thread.
        int stageStride = blockRows * sets;
        long accFloats = (long)(blockRows / 2) * sets * 8 * n;
        long need = accFloats + (4L * stageStride) + 16;
        float[]? scratchArray = t_tileScratch;
        if (scratchArray is null || scratchArray.Length < need)
        {
            scratchArray = GC.AllocateUninitializedArray<float>((int)need, pinned: true);
            t_tileScratch = scratchArray;
        }

        float* accBase = (float*)(((nint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(scratchArray)) + 63) & ~(nint)63);
        float* stage = accBase + accFloats;
        bool blockPrefetch = TileBlockPrefetch && groups > 1 && prefetchPairs > 0;
        var a = default(TileArgs);
        a.RowStride = k;
        a.Half = half;
        a.XStride = job.XStride;
        a.StageStride = stageStride;
        a.PrefetchDelta = (nint)(2L * prefetchPairs * k);
        for (int rb = r0; rb < r1; rb += blockRows)
        {
            int rows = Math.Min(blockRows, r1 - rb);
            int pairs = (rows + 1) / 2;
            int nextRows = Math.Min(blockRows, r1 - rb - rows);

            // Next-block cursor: the next block's weights, one contiguous range per matrix, spread over the slots
            // (64 bytes of x walked) of groups 1.. at one or two lines per slot every 2^i slots.
            a.Cursor = null;
            a.SlotMask = nint.MaxValue;
            int cursorLines = 1;
            if (blockPrefetch && nextRows > 0)
            {
                a.Cursor = job.W0 + ((long)(rb + rows) * k);
                a.CursorEnd = a.Cursor + ((long)nextRows * k);
                a.CursorNext = sets == 2 ? job.W1 + ((long)(rb + rows) * k) : null;
                a.CursorNextLength = (long)nextRows * k;
                long lines = ((long)nextRows * k * sizeof(ushort) * sets / 64) + 1;
                long slots = Math.Max(1, (long)pairs * sets * (groups - 1) * half * sizeof(float) / 64);
                int every = 1;
                while (slots / (every * 2) >= lines && every < 64)
                {
                    every *= 2;
                }

                a.SlotMask = (64 * every) - 1;
                cursorLines = slots >= lines ? 1 : 2;
            }

            int c0 = 0;
            for (int g = 0; g < groups; g++)
            {
                int cols = GroupColumns(m, groups, g);
                for (int j0 = 0; j0 < half; j0 += kBlock)
                {
                    int j1 = Math.Min(half, j0 + kBlock);
                    a.Mode = (j0 == 0 ? TileFirst : 0) | (j1 == half ? TileLast : 0);
                    a.Len = j1 - j0;
                    a.X = job.Split + ((long)c0 * job.XStride) + j0;
                    for (int set = 0; set < sets; set++)
                    {
                        ushort* wSet = set == 0 ? job.W0 : job.W1;
                        a.W = wSet + ((long)rb * k) + (2 * j0);
                        a.Pairs = pairs;
                        a.LastSingle = (rows & 1) != 0;
                        a.Acc = accBase + ((long)set * (blockRows / 2) * 8 * n);
                        a.Stage = stage + (set * blockRows);
                        int pfMode = PfNone;
                        if (g > 0 && a.Cursor != null)
                        {
                            pfMode = cursorLines == 1 ? PfCursor1 : PfCursor2;
                        }
                        else if (g == 0 && prefetchPairs > 0 && (!blockPrefetch || rb == r0))
                        {
                            // Past the last pair: the up rows of this block, else the next K block, else the next
                            // row block (contiguous after this one).
                            pfMode = PfPairs;
                            a.PrefetchWrap = set + 1 < sets ? job.W1 + ((long)rb * k) + (2 * j0)
                                : j1 < half ? job.W0 + ((long)rb * k) + (2 * j1)
                                : job.W0 + ((long)(rb + rows) * k);
                        }

                        TilePairsCall<TOps, TV>(cols, pfMode, ref a);
                    }
                }

                TiledEpilogue(ref job, stage, stageStride, blockRows, rb, rows, c0, cols, kv);
                c0 += cols;
            }
        }
    }

    /// <summary>Columns in group <paramref name="g"/> of <paramref name="groups"/> balanced groups over <paramref name="m"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int GroupColumns(int m, int groups, int g) => (m / groups) + (g < m % groups ? 1 : 0);

    /// <summary>K tail (scalar) and the epilogue for one row block × column group: stage → y.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void TiledEpilogue(ref Job job, float* stage, int stageStride, int blockRows, int rb, int rows, int g0, int gc, int kv)
    {
        int k = job.K;
        bool silu = (job.Flags & FlagSilu) != 0;
        int sets = silu ? 2 : 1;
        for (int cc = 0; cc < gc; cc++)
        {
            float* st = stage + ((long)cc * stageStride);
            if (kv < k)
            {
                float* xRow = job.X + ((long)(g0 + cc) * k) + kv;
                for (int set = 0; set < sets; set++)
                {
                    ushort* w = (set == 0 ? job.W0 : job.W1) + ((long)rb * k) + kv;
                    for (int t = 0; t < rows; t++)
                    {
                        st[(set * blockRows) + t] += TailDot(w + ((long)t * k), xRow, k - kv);
                    }
                }
            }

            float* yRow = job.Y + ((long)(g0 + cc) * job.Rows) + rb;
            int t0 = 0;
            if (silu)
            {
                float* up = st + blockRows;
                if (Vector256.IsHardwareAccelerated)
                {
                    for (; t0 + 8 <= rows; t0 += 8)
                    {
                        Vector256<float> g = Vector256.Load(st + t0);
                        Vector256<float> silu8 = g / (Vector256<float>.One + Vector256.Exp(-g));
                        Vector256.Store(silu8 * Vector256.Load(up + t0), yRow + t0);
                    }
                }

                for (; t0 < rows; t0++)
                {
                    yRow[t0] = Silu(st[t0]) * up[t0];
                }
            }
            else
            {
                float alpha = job.Alpha;
                bool accumulate = (job.Flags & FlagAccumulate) != 0;
                if (Vector256.IsHardwareAccelerated)
                {
                    Vector256<float> a = Vector256.Create(alpha);
                    for (; t0 + 8 <= rows; t0 += 8)
                    {
                        Vector256<float> v = a * Vector256.Load(st + t0);
                        Vector256.Store(accumulate ? v + Vector256.Load(yRow + t0) : v, yRow + t0);
                    }
                }

                for (; t0 < rows; t0++)
                {
                    yRow[t0] = accumulate ? yRow[t0] + (alpha * st[t0]) : alpha * st[t0];
                }
            }
        }
    }

    private const int TileFirst = 1;
    private const int TileLast = 2;

    private const int PfNone = 0;
    private const int PfPairs = 1;
    private const int PfCursor1 = 2;
    private const int PfCursor2 = 3;

    /// <summary>Arguments of <see cref="TilePairs{TOps, TV, TC, TP}"/>; the cursor fields are updated by the call.</summary>
    private struct TileArgs
    {
        /// <summary>Row 0 of pair 0 at the K block's start.</summary>
        public ushort* W;
        public int Pairs;
        public bool LastSingle;
        public nint RowStride;

        /// <summary>x split: the group's first column at the K block's start (even half; odd at +Half).</summary>
        public float* X;
        public int Len;
        public nint Half;
        public nint XStride;
        public float* Acc;
        public int Mode;
        public float* Stage;
        public nint StageStride;

        /// <summary>Pair prefetch: target = this pair + PrefetchDelta, or past the last pair PrefetchWrap + the overshoot.</summary>
        public nint PrefetchDelta;
        public ushort* PrefetchWrap;

        /// <summary>Cursor prefetch over [Cursor, CursorEnd), then [CursorNext, + CursorNextLength); SlotMask = MaxValue when done.</summary>
        public ushort* Cursor;
        public ushort* CursorEnd;
        public ushort* CursorNext;
        public long CursorNextLength;
        public nint SlotMask;
    }

    /// <summary>Dispatches to the <see cref="TilePairs{TOps, TV, TC, TP}"/> specialization for the group width and prefetch mode.</summary>
    private static void TilePairsCall<TOps, TV>(int cols, int pfMode, ref TileArgs a)
        where TOps : struct, IVecOps<TV>
        where TV : struct
    {
        switch (cols)
        {
            case 4:
                TilePairsCall<TOps, TV, Cols4>(pfMode, ref a);
                break;
            case 3:
                TilePairsCall<TOps, TV, Cols3>(pfMode, ref a);
                break;
            case 2:
                TilePairsCall<TOps, TV, Cols2>(pfMode, ref a);
                break;
            default:
                TilePairsCall<TOps, TV, Cols1>(pfMode, ref a);
                break;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void TilePairsCall<TOps, TV, TC>(int pfMode, ref TileArgs a)
        where TOps : struct, IVecOps<TV>
        where TV : struct
        where TC : struct, IConstInt
    {
        switch (pfMode)
        {
            case PfPairs:
                TilePairs<TOps, TV, TC, Const1>(ref a);
                break;
            case PfCursor1:
                TilePairs<TOps, TV, TC, Const2>(ref a);
                break;
            case PfCursor2:
                TilePairs<TOps, TV, TC, Const3>(ref a);
                break;
            default:
                TilePairs<TOps, TV, TC, Const0>(ref a);
                break;
        }
    }

    /// <summary>
    /// The micro-kernel, over every row pair of a block: rows (w, w + RowStride) × TC ≤ 4 columns of split x over
    /// Len half-steps. 8 vector accumulators: each weight load is converted once and feeds 2·TC FMAs, each x load
    /// feeds 2. <see cref="TileFirst"/> starts from zero (else from the pair's accumulators in Acc),
    /// <see cref="TileLast"/> reduces into Stage[column·StageStride + row] (else stores the accumulators back). TP:
    /// no prefetch (0), both rows of the pair PrefetchDelta ahead (1), or the cursor at one (2) or two (3) lines per
    /// slot, one 64-byte line per row per 64 bytes of x walked.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void TilePairs<TOps, TV, TC, TP>(ref TileArgs args)
        where TOps : struct, IVecOps<TV>
        where TV : struct
        where TC : struct, IConstInt
        where TP : struct, IConstInt
    {
        int n = TOps.Count;
        nint rs = args.RowStride;
        nint x1 = args.XStride, x2 = 2 * args.XStride, x3 = 3 * args.XStride;
        nint ho = args.Half;
        float* xs = args.X;
        float* end = xs + args.Len;
        int mode = args.Mode;
        int pairs = args.Pairs;
        nint ss = args.StageStride;
        float* sums = stackalloc float[8];
        ushort* cursor = args.Cursor;
        nint slotMask = args.SlotMask;
        ushort* w = args.W;
        float* acc = args.Acc;
        float* st = args.Stage;
        for (int q = 0; q < pairs; q++, w += 2 * rs, acc += 8 * n, st += 2)
        {
            nint dw = q == pairs - 1 && args.LastSingle ? 0 : rs;
            nint dpf = 0;
            if (TP.Value == 1)
            {
                dpf = args.PrefetchDelta;
                if (q * 2 * rs >= (2 * (nint)pairs * rs) - dpf)
                {
                    // Past this matrix's block: continue into PrefetchWrap by the same overshoot.
                    dpf = (nint)(args.PrefetchWrap - w) + (dpf - ((2 * (nint)pairs * rs) - (q * 2 * rs)));
                }
            }

            TV a00 = TOps.Zero, a01 = TOps.Zero, a02 = TOps.Zero, a03 = TOps.Zero;
            TV a10 = TOps.Zero, a11 = TOps.Zero, a12 = TOps.Zero, a13 = TOps.Zero;
            if ((mode & TileFirst) == 0)
            {
                a00 = TOps.Load(acc);
                a10 = TOps.Load(acc + (4 * n));
                if (TC.Value > 1)
                {
                    a01 = TOps.Load(acc + n);
                    a11 = TOps.Load(acc + (5 * n));
                }

                if (TC.Value > 2)
                {
                    a02 = TOps.Load(acc + (2 * n));
                    a12 = TOps.Load(acc + (6 * n));
                }

                if (TC.Value > 3)
                {
                    a03 = TOps.Load(acc + (3 * n));
                    a13 = TOps.Load(acc + (7 * n));
                }
            }

            ushort* pw = w;
            for (float* pe = xs; pe < end; pe += n, pw += 2 * n)
            {
                if (TP.Value == 1 && Sse.IsSupported && ((nint)pe & 63) == 0)
                {
                    // One line per row per 64 bytes of w: every other step with Vector256, every step with Vector512.
                    Sse.Prefetch0(pw + dpf);
                    Sse.Prefetch0(pw + dpf + rs);
                }

                if (TP.Value >= 2 && Sse.IsSupported && ((nint)pe & slotMask) == 0)
                {
                    Sse.Prefetch0(cursor);
                    cursor += 32;
                    if (TP.Value == 3)
                    {
                        Sse.Prefetch0(cursor);
                        cursor += 32;
                    }
                }

                TV p0 = TOps.LoadBf16Pairs(pw);
                TV p1 = TOps.LoadBf16Pairs(pw + dw);
                TV v0 = TOps.Even(p0), v1 = TOps.Even(p1);
                TV t = TOps.Load(pe);
                a00 = TOps.Fma(v0, t, a00);
                a10 = TOps.Fma(v1, t, a10);
                if (TC.Value > 1)
                {
                    t = TOps.Load(pe + x1);
                    a01 = TOps.Fma(v0, t, a01);
                    a11 = TOps.Fma(v1, t, a11);
                }

                if (TC.Value > 2)
                {
                    t = TOps.Load(pe + x2);
                    a02 = TOps.Fma(v0, t, a02);
                    a12 = TOps.Fma(v1, t, a12);
                }

                if (TC.Value > 3)
                {
                    t = TOps.Load(pe + x3);
                    a03 = TOps.Fma(v0, t, a03);
                    a13 = TOps.Fma(v1, t, a13);
                }

                v0 = TOps.Odd(p0);
                v1 = TOps.Odd(p1);
                float* po = pe + ho;
                t = TOps.Load(po);
                a00 = TOps.Fma(v0, t, a00);
                a10 = TOps.Fma(v1, t, a10);
                if (TC.Value > 1)
                {
                    t = TOps.Load(po + x1);
                    a01 = TOps.Fma(v0, t, a01);
                    a11 = TOps.Fma(v1, t, a11);
                }

                if (TC.Value > 2)
                {
                    t = TOps.Load(po + x2);
                    a02 = TOps.Fma(v0, t, a02);
                    a12 = TOps.Fma(v1, t, a12);
                }

                if (TC.Value > 3)
                {
                    t = TOps.Load(po + x3);
                    a03 = TOps.Fma(v0, t, a03);
                    a13 = TOps.Fma(v1, t, a13);
                }
            }

            if (TP.Value >= 2 && cursor >= args.CursorEnd)
            {
                if (args.CursorNext != null)
                {
                    cursor = args.CursorNext + (cursor - args.CursorEnd);
                    args.CursorEnd = args.CursorNext + args.CursorNextLength;
                    args.CursorNext = null;
                }
                else
                {
                    slotMask = nint.MaxValue;
                }
            }

            if ((mode & TileLast) != 0)
            {
                // sums = [row 0: columns 0..3 | row 1: columns 0..3] → stage[column][row].
                TOps.ReduceTile(a00, a01, a02, a03, a10, a11, a12, a13, sums);
                st[0] = sums[0];
                st[1] = sums[4];
                if (TC.Value > 1)
                {
                    st[ss] = sums[1];
                    st[ss + 1] = sums[5];
                }

                if (TC.Value > 2)
                {
                    st[2 * ss] = sums[2];
                    st[(2 * ss) + 1] = sums[6];
                }

                if (TC.Value > 3)
                {
                    st[3 * ss] = sums[3];
                    st[(3 * ss) + 1] = sums[7];
                }
            }
            else
            {
                TOps.Store(acc, a00);
                TOps.Store(acc + (4 * n), a10);
                if (TC.Value > 1)
                {
                    TOps.Store(acc + n, a01);
                    TOps.Store(acc + (5 * n), a11);
                }

                if (TC.Value > 2)
                {
                    TOps.Store(acc + (2 * n), a02);
                    TOps.Store(acc + (6 * n), a12);
                }

                if (TC.Value > 3)
                {
                    TOps.Store(acc + (3 * n), a03);
                    TOps.Store(acc + (7 * n), a13);
                }
            }
        }

        args.Cursor = cursor;
        args.SlotMask = slotMask;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Silu(float g) => g / (1f + MathF.Exp(-g));

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
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

    /// <summary>Everything a task needs; lives on the calling thread's stack for the duration of the call.</summary>
    private struct Job
    {
        public ushort* W0;
        public ushort* W1;
        public float* X;
        public float* Split;
        public int XStride;
        public float* Y;
        public int Rows;
        public int K;
        public int M;
        public int Half;
        public int ChunkRows;
        public float Alpha;
        public int Flags;
        public int Path;
        public bool Tiled;
        public int Groups;
        public int KBlock;
    }
}

/// <summary>A compile-time integer for specializing generic kernels (the JIT folds <see cref="Value"/>).</summary>
internal interface IConstInt
{
    static abstract int Value { get; }
}

internal readonly struct Const0 : IConstInt
{
    public static int Value => 0;
}

internal readonly struct Const1 : IConstInt
{
    public static int Value => 1;
}

internal readonly struct Const2 : IConstInt
{
    public static int Value => 2;
}

internal readonly struct Const3 : IConstInt
{
    public static int Value => 3;
}

internal readonly struct Cols1 : IConstInt
{
    public static int Value => 1;
}

internal readonly struct Cols2 : IConstInt
{
    public static int Value => 2;
}

internal readonly struct Cols3 : IConstInt
{
    public static int Value => 3;
}

internal readonly struct Cols4 : IConstInt
{
    public static int Value => 4;
}
