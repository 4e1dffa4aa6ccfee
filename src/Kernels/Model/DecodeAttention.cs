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

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Task(int index, nint context)
    {
        var c = (Context*)context;
        var job = c->Jobs[index / c->KvHeads];
        int h = index % c->KvHeads, hd = c->HeadDim, n = job.Keys;
        float* kBase = job.K + ((long)h * job.Capacity + job.FirstKey) * hd;
        float* vBase = job.V + ((long)h * job.Capacity + job.FirstKey) * hd;
        float[]? rented = n > 4096 ? System.Buffers.ArrayPool<float>.Shared.Rent(n) : null;
        Span<float> scores = rented ?? stackalloc float[n];
        try
        {
            for (int g = 0; g < c->Group; g++)
            {
                int head = h * c->Group + g;
                float* q = job.Q + head * hd;
                float max = float.NegativeInfinity;
                for (int j = 0; j < n; j++)
                {
                    float s = NativeOps.Dot(q, kBase + (long)j * hd, hd) * c->Scale;
                    scores[j] = s;
                    if (s > max) max = s;
                }
                float sum = 0;
                for (int j = 0; j < n; j++)
                {
                    float e = MathF.Exp(scores[j] - max);
                    scores[j] = e;
                    sum += e;
                }
                float inv = 1f / sum;
                float* o = job.Out + head * hd;
                new Span<float>(o, hd).Clear();
                for (int j = 0; j < n; j++) Axpy(scores[j] * inv, vBase + (long)j * hd, o, hd);
            }
        }
        finally
        {
            if (rented is not null) System.Buffers.ArrayPool<float>.Shared.Return(rented);
        }
    }

    /// <summary>y += a * x.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Axpy(float a, float* x, float* y, int n)
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            var va = Vector512.Create(a);
            for (; i + 16 <= n; i += 16) Vector512.FusedMultiplyAdd(va, Vector512.Load(x + i), Vector512.Load(y + i)).Store(y + i);
        }
        for (; i < n; i++) y[i] += a * x[i];
    }
}
