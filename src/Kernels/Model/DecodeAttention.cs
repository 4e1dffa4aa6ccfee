using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using MoeServer.Kernels.Native;

namespace MoeServer.Kernels.Model;

/// <summary>
/// Attention of single-token (decode) segments, computed straight over the KV cache memory. At decode the torch
/// path spends far more time dispatching its ~11 small ops per sequence and layer than computing; here each
/// (sequence, kv head) pair is one task on the worker pool.
/// </summary>
internal static unsafe class DecodeAttention
{
    /// <summary>One decode row: its query heads, output slot and cache.</summary>
    internal struct Job
    {
        public float* Q;        // [nH * hd]
        public float* Out;      // [nH * hd]
        public float* K;        // [nKV, capacity, hd]
        public float* V;
        public int Capacity;
        public int FirstKey;    // sliding window start
        public int Keys;        // positions FirstKey..FirstKey+Keys-1
    }

    private struct Context
    {
        public Job* Jobs;
        public int KvHeads;
        public int Group;
        public int HeadDim;
        public float Scale;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Run(Span<Job> jobs, int kvHeads, int group, int headDim)
    {
        fixed (Job* pj = jobs)
        {
            var ctx = new Context { Jobs = pj, KvHeads = kvHeads, Group = group, HeadDim = headDim, Scale = 1f / MathF.Sqrt(headDim) };
            WorkerPool.Shared.Parallel(jobs.Length * kvHeads, &Task, (nint)(&ctx));
        }
    }

    /// <summary>One (sequence, kv head): the head's whole query group is scored together, so each cached key and
    /// value row is read once for all the query heads that share it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Task(int index, nint context)
    {
        var c = (Context*)context;
        var job = c->Jobs[index / c->KvHeads];
        int h = index % c->KvHeads, hd = c->HeadDim, n = job.Keys, group = c->Group;
        float* kBase = job.K + ((long)h * job.Capacity + job.FirstKey) * hd;
        float* vBase = job.V + ((long)h * job.Capacity + job.FirstKey) * hd;
        float* q = job.Q + (long)h * group * hd;
        float* o = job.Out + (long)h * group * hd;
        int need = group * n;
        float[]? rented = need > 8192 ? System.Buffers.ArrayPool<float>.Shared.Rent(need) : null;
        Span<float> scoreSpan = rented ?? stackalloc float[need];
        try
        {
            fixed (float* scores = scoreSpan)
            {
                for (int j = 0; j < n; j++)
                {
                    float* k = kBase + (long)j * hd;
                    for (int g = 0; g < group; g++) scores[g * n + j] = NativeOps.Dot(q + g * hd, k, hd) * c->Scale;
                }
                for (int g = 0; g < group; g++)
                {
                    float* sg = scores + g * n;
                    float max = float.NegativeInfinity;
                    for (int j = 0; j < n; j++) max = MathF.Max(max, sg[j]);
                    float sum = 0;
                    for (int j = 0; j < n; j++)
                    {
                        float e = MathF.Exp(sg[j] - max);
                        sg[j] = e;
                        sum += e;
                    }
                    float inv = 1f / sum;
                    for (int j = 0; j < n; j++) sg[j] *= inv;
                }
                new Span<float>(o, group * hd).Clear();
                for (int j = 0; j < n; j++)
                {
                    float* v = vBase + (long)j * hd;
                    for (int g = 0; g < group; g++) Axpy(scores[g * n + j], v, o + g * hd, hd);
                }
            }
        }
        finally
        {
            if (rented is not null) System.Buffers.ArrayPool<float>.Shared.Return(rented);
        }
    }

    /// <summary>y += a * x.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Axpy(float a, float* x, float* y, int n)
    {
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var va = Vector256.Create(a);
            for (; i + 8 <= n; i += 8) Vector256.FusedMultiplyAdd(va, Vector256.Load(x + i), Vector256.Load(y + i)).Store(y + i);
        }
        for (; i < n; i++) y[i] += a * x[i];
    }
}
