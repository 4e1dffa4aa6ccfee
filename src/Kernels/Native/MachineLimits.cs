using System.Diagnostics;
using System.Runtime.Intrinsics;
using TorchSharp;
using static TorchSharp.torch;

namespace MoeServer.Kernels.Native;

/// <summary>
/// What this machine can do, measured in a few seconds: the streaming read bandwidth all cores reach over
/// huge pages (the ceiling for decode GEMVs) and TorchSharp's bf16 / fp32 matmul throughput (the ceiling
/// for prefill-sized products).
/// </summary>
/// <param name="ReadGBps">Best all-core read bandwidth over a 1 GiB huge-page buffer, GB/s (10^9 bytes).</param>
/// <param name="Bf16MatmulGflops">Best torch.matmul throughput on bf16 square matrices, GFLOP/s.</param>
/// <param name="Fp32MatmulGflops">Best torch.matmul throughput on fp32 square matrices, GFLOP/s.</param>
/// <param name="Cores">Logical processors (<see cref="Environment.ProcessorCount"/>).</param>
/// <param name="CpuModel">"model name" from /proc/cpuinfo (empty when unavailable).</param>
public sealed record MachineLimits(double ReadGBps, double Bf16MatmulGflops, double Fp32MatmulGflops, int Cores, string CpuModel)
{
    /// <summary>Runs all measurements (a few seconds; allocates a 1 GiB buffer for the duration).</summary>
    /// <param name="pool">Pool for the bandwidth test; null means <see cref="WorkerPool.Shared"/>.</param>
    public static MachineLimits Measure(WorkerPool? pool = null)
    {
        double read = MeasureReadBandwidth(1L << 30, passes: 10, pool);
        torch.set_num_threads(Environment.ProcessorCount);
        double bf16 = MeasureMatmulGflops(ScalarType.BFloat16);
        double fp32 = MeasureMatmulGflops(ScalarType.Float32);
        return new MachineLimits(read, bf16, fp32, Environment.ProcessorCount, ReadCpuModel());
    }

    /// <summary>Best-of-<paramref name="passes"/> read bandwidth (GB/s) summing a huge-page buffer on every pool participant.</summary>
    public static unsafe double MeasureReadBandwidth(long bytes, int passes, WorkerPool? pool = null)
    {
        pool ??= WorkerPool.Shared;
        using var buffer = new HugePageBuffer(bytes, zero: true);
        long floats = buffer.ByteLength / sizeof(float);
        float* p = buffer.GetPointer<float>();
        int parts = pool.WorkerCount;
        long per = floats / parts / 64 * 64;
        var args = new ReadArgs { Data = p, PerPart = per };
        double best = 0;
        for (int pass = 0; pass < passes; pass++)
        {
            long t0 = Stopwatch.GetTimestamp();
            pool.Parallel(parts, &ReadPart, (nint)(&args));
            double s = Stopwatch.GetElapsedTime(t0).TotalSeconds;
            best = Math.Max(best, per * parts * sizeof(float) / s / 1e9);
        }

        return best;
    }

    /// <summary>
    /// Best torch.matmul throughput (GFLOP/s) on square matrices of <paramref name="dtype"/>. The size grows
    /// from 512 up to 2048 while a product takes under ~0.15 s, so a slow bf16 fallback cannot stall the test.
    /// </summary>
    public static double MeasureMatmulGflops(ScalarType dtype)
    {
        double best = 0;
        foreach (int n in new[] { 512, 1024, 2048 })
        {
            using var scope = torch.NewDisposeScope();
            Tensor a = torch.randn(n, n, dtype: dtype);
            Tensor b = torch.randn(n, n, dtype: dtype);
            double slowest = 0;
            for (int rep = 0; rep < 4; rep++)
            {
                long t0 = Stopwatch.GetTimestamp();
                using (Tensor c = torch.matmul(a, b))
                {
                }

                double s = Stopwatch.GetElapsedTime(t0).TotalSeconds;
                slowest = Math.Max(slowest, s);
                best = Math.Max(best, 2.0 * n * n * n / s / 1e9);
                if (s > 0.3)
                {
                    break;
                }
            }

            if (slowest > 0.15)
            {
                break;
            }
        }

        return best;
    }

    private static string ReadCpuModel()
    {
        try
        {
            foreach (string line in File.ReadLines("/proc/cpuinfo"))
            {
                if (line.StartsWith("model name", StringComparison.Ordinal))
                {
                    int colon = line.IndexOf(':', StringComparison.Ordinal);
                    return colon < 0 ? string.Empty : line[(colon + 1)..].Trim();
                }
            }
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }

        return string.Empty;
    }

    private static unsafe void ReadPart(int part, nint argsPtr)
    {
        var args = (ReadArgs*)argsPtr;
        float* p = args->Data + (part * args->PerPart);
        long n = args->PerPart;
        float total;
        if (Vector512.IsHardwareAccelerated)
        {
            Vector512<float> s0 = default, s1 = default, s2 = default, s3 = default;
            for (long i = 0; i < n; i += 64)
            {
                s0 += Vector512.Load(p + i);
                s1 += Vector512.Load(p + i + 16);
                s2 += Vector512.Load(p + i + 32);
                s3 += Vector512.Load(p + i + 48);
            }

            total = Vector512.Sum((s0 + s1) + (s2 + s3));
        }
        else
        {
            Vector256<float> s0 = default, s1 = default, s2 = default, s3 = default;
            Vector256<float> s4 = default, s5 = default, s6 = default, s7 = default;
            for (long i = 0; i < n; i += 64)
            {
                s0 += Vector256.Load(p + i);
                s1 += Vector256.Load(p + i + 8);
                s2 += Vector256.Load(p + i + 16);
                s3 += Vector256.Load(p + i + 24);
                s4 += Vector256.Load(p + i + 32);
                s5 += Vector256.Load(p + i + 40);
                s6 += Vector256.Load(p + i + 48);
                s7 += Vector256.Load(p + i + 56);
            }

            total = Vector256.Sum(((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7)));
        }

        args->Sink[part & 15] = total;
    }

    private unsafe struct ReadArgs
    {
        public float* Data;
        public long PerPart;
        public fixed float Sink[16];
    }
}
