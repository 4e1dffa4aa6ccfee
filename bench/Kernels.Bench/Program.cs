using System.Diagnostics;
using System.Globalization;
using System.Runtime.Intrinsics;
using System.Text;
using MoeServer.Kernels.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace MoeServer.Kernels.Bench;

/// <summary>
/// Kernel benchmark: machine limits, then Bf16Gemv over a ~720 MB working set of distinct weight matrices
/// (so nothing sits in cache), against TorchSharp's linear on the same weights. Writes bench/results/kernels.md.
/// Usage: dotnet run -c Release --project bench/Kernels.Bench [-- --out path.md]
/// </summary>
internal static unsafe class Program
{
    private const long WorkingSetBytes = 720L * 1000 * 1000;
    private static readonly (int N, int K, string Role)[] Shapes =
    {
        (2816, 1024, "gate/up"),
        (1024, 2816, "down"),
        (32000, 1024, "lm_head"),
    };

    private static int Main(string[] args)
    {
        CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
        string outPath = args.Length >= 2 && args[0] == "--out" ? args[1] : Path.Combine(FindRepoRoot(), "bench", "results", "kernels.md");
        var pool = WorkerPool.Shared;
        var md = new StringBuilder();
        void Line(string s)
        {
            Console.WriteLine(s);
            md.AppendLine(s);
        }

        if (args.Length > 0 && args[0] == "--tune")
        {
            Tune(pool);
            return 0;
        }

        var total = Stopwatch.StartNew();
        MachineLimits lim = MachineLimits.Measure(pool);
        double dispatchUs = MeasureDispatchMicroseconds(pool);

        Line("# Native kernel benchmark");
        Line(string.Empty);
        Line($"Run {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC, .NET {Environment.Version}, `bench/Kernels.Bench`.");
        Line(string.Empty);
        Line("## Machine limits");
        Line(string.Empty);
        Line("| Quantity | Value |");
        Line("|---|---|");
        Line($"| CPU model (/proc/cpuinfo) | {lim.CpuModel} |");
        Line($"| Cores | {lim.Cores} |");
        Line($"| ISA | AVX2 {System.Runtime.Intrinsics.X86.Avx2.IsSupported}, AVX-512F {System.Runtime.Intrinsics.X86.Avx512F.IsSupported}, Vector512 accelerated {Vector512.IsHardwareAccelerated}; Bf16Gemv path: {Bf16Gemv.HardwarePath} |");
        Line($"| Read bandwidth, all cores, 1 GiB huge-page buffer | {lim.ReadGBps:F1} GB/s |");
        Line($"| torch.matmul bf16 (square, {lim.Cores} threads) | {lim.Bf16MatmulGflops:F1} GFLOP/s |");
        Line($"| torch.matmul fp32 (square, {lim.Cores} threads) | {lim.Fp32MatmulGflops:F1} GFLOP/s |");
        Line($"| WorkerPool.Parallel({pool.WorkerCount}) dispatch, warm | {dispatchUs:F2} µs |");
        Line(string.Empty);

        long hugeBefore = AnonHugePagesKb();
        using var weights = new HugePageBuffer(WorkingSetBytes);
        FillRandomBf16(weights, pool);
        Line($"Weight buffer: {weights.ByteLength / 1e6:F0} MB, madvise(MADV_HUGEPAGE) {(weights.HugePagesAdvised ? "ok" : "failed")}, "
            + $"{(AnonHugePagesKb() - hugeBefore) / 1024} MiB of it on 2 MiB pages (AnonHugePages in /proc/self/smaps_rollup).");
        Line(string.Empty);

        Line($"## Bf16Gemv over a {WorkingSetBytes / 1e6:F0} MB working set (distinct matrices, cycled)");
        Line(string.Empty);
        Line("Shape is W [N x K] (y = x·Wᵀ). GB/s counts weight bytes only. M=1 is compared with the measured read");
        Line("bandwidth; M=8/32 with torch's bf16 matmul peak. Torch: `torch.nn.functional.linear` on the same bf16");
        Line("weights (copied into torch tensors), bf16 activations, same thread count. Each figure is the best full pass");
        Line("over the working set after a warm-up pass (the 2 cores are shared with other jobs, so best-of filters their noise).");
        Line(string.Empty);
        Line("| Shape (N x K) | role | matrices | M=1 GB/s | M=1 % of read BW | torch linear M=1 GB/s | torch % of read BW | M=8 GFLOP/s | M=8 % bf16 peak (% fp32 peak) | M=32 GFLOP/s | M=32 % bf16 peak (% fp32 peak) |");
        Line("|---|---|---|---|---|---|---|---|---|---|---|");
        double readBest = lim.ReadGBps;
        var rows = new List<Func<double, string>>();
        foreach ((int n, int k, string role) in Shapes)
        {
            long matBytes = 2L * n * k;
            int count = (int)(weights.ByteLength / matBytes);
            var mats = new ushort*[count];
            for (int i = 0; i < count; i++)
            {
                mats[i] = weights.GetPointer<ushort>() + ((long)i * n * k);
            }

            // Re-measure the ceiling next to each row: the cores are shared, and a ratio against a bandwidth
            // measured during someone else's build would flatter the kernel. The best figure seen is used.
            readBest = Math.Max(readBest, CleanReadBandwidth(pool));
            double m1 = GemvSeconds(mats, n, k, 1, pool, minSeconds: 0.3);
            double gbps1 = count * matBytes / m1 / 1e9;
            double m8 = GemvSeconds(mats, n, k, 8, pool, minSeconds: 0.3);
            double m32 = GemvSeconds(mats, n, k, 32, pool, minSeconds: 0.3);
            double gf8 = 2.0 * 8 * n * k * count / m8 / 1e9;
            double gf32 = 2.0 * 32 * n * k * count / m32 / 1e9;
            double torchS = TorchLinearSeconds(weights, count, n, k, minSeconds: 0.3);
            double torchGbps = count * matBytes / torchS / 1e9;
            rows.Add(read => $"| {n} x {k} | {role} | {count} | {gbps1:F1} | {100 * gbps1 / read:F0}% | {torchGbps:F1} | {100 * torchGbps / read:F0}% | {gf8:F1} | {100 * gf8 / lim.Bf16MatmulGflops:F0}% ({100 * gf8 / lim.Fp32MatmulGflops:F0}%) | {gf32:F1} | {100 * gf32 / lim.Bf16MatmulGflops:F0}% ({100 * gf32 / lim.Fp32MatmulGflops:F0}%) |");
        }

        foreach (var row in rows)
        {
            Line(row(readBest));
        }

        Line(string.Empty);
        {
            (int inter, int k) = (2816, 1024);
            long pairBytes = 2L * 2 * inter * k;
            int count = (int)(weights.ByteLength / pairBytes);
            var mats = new ushort*[count];
            for (int i = 0; i < count; i++)
            {
                mats[i] = weights.GetPointer<ushort>() + ((long)i * 2 * inter * k);
            }

            double s = SiluSeconds(mats, inter, k, 1, pool, 0.3);
            double gbps = count * pairBytes / s / 1e9;
            Line($"Fused SiluGateUp, gate+up [2 x {inter} x {k}], M=1: {gbps:F1} GB/s ({100 * gbps / readBest:F0}% of read BW), {s / count * 1e6:F0} µs per call.");
            Line(string.Empty);
            Line($"Read bandwidth used for the ratios: {readBest:F1} GB/s, the best of the limits run ({lim.ReadGBps:F1}) and a re-measure next to each shape.");
        }

        Line(s_contended == 0
            ? "Every figure comes from passes during which other processes used < 5% of the CPUs."
            : $"{s_contended} figure(s) had no pass free of other processes' CPU use (> 5%) within {MaxSecondsPerItem} s; they are best-of-contended.");
        Line(string.Empty);
        Line($"Total bench time {total.Elapsed.TotalSeconds:F1} s.");

        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(outPath))!);
        File.WriteAllText(outPath, md.ToString());
        Console.WriteLine($"wrote {outPath}");
        return 0;
    }

    /// <summary>Compares internal variants at M=1 (not part of the report).</summary>
    private static void Tune(WorkerPool pool)
    {
        if (Environment.GetEnvironmentVariable("TUNE_THREADS") == "1")
        {
            pool = new WorkerPool(1);
        }

        using var weights = new HugePageBuffer(WorkingSetBytes);
        FillRandomBf16(weights, pool);
        int[] batches = (Environment.GetEnvironmentVariable("TUNE_M") ?? "1").Split(',').Select(int.Parse).ToArray();
        var variants = new (string Name, int SingleMax, int Pf)[]
        {
            ("4row", 0, 1024), ("1row", 64, 1024), ("1row pf0", 64, 0),
        };
        for (int round = 0; round < 2; round++)
        {
            foreach ((int n, int k, string role) in Shapes)
            {
                long matBytes = 2L * n * k;
                int count = (int)(weights.ByteLength / matBytes);
                var mats = new ushort*[count];
                for (int i = 0; i < count; i++)
                {
                    mats[i] = weights.GetPointer<ushort>() + ((long)i * n * k);
                }

                var sb = new StringBuilder($"{n}x{k} (read {MachineLimits.MeasureReadBandwidth(256L << 20, 4, pool):F1}):");
                foreach (int m in batches)
                {
                    sb.Append(CultureInfo.InvariantCulture, $" | M={m}");
                    foreach (var v in variants)
                    {
                        Bf16Gemv.SingleRowMaxBatch = v.SingleMax;
                        Bf16Gemv.PrefetchBytes = v.Pf;
                        double s = GemvSeconds(mats, n, k, m, pool, minSeconds: 0.1);
                        sb.Append(CultureInfo.InvariantCulture, $"  {v.Name} {count * matBytes / s / 1e9:F1}GB/s {2.0 * m * n * k * count / s / 1e9:F0}GF");
                    }
                }

                Console.WriteLine(sb);
            }
        }

        Bf16Gemv.SingleRowMaxBatch = 4;
        Bf16Gemv.PrefetchBytes = 1024;
        Console.WriteLine($"read BW {MachineLimits.MeasureReadBandwidth(1L << 30, 6, pool):F1} GB/s");
    }

    private static long AnonHugePagesKb()
    {
        try
        {
            foreach (string line in File.ReadLines("/proc/self/smaps_rollup"))
            {
                if (line.StartsWith("AnonHugePages:", StringComparison.Ordinal))
                {
                    return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]);
                }
            }
        }
        catch (IOException)
        {
        }

        return 0;
    }

    private static string FindRepoRoot()
    {
        for (string? d = Environment.CurrentDirectory; d != null; d = Path.GetDirectoryName(d))
        {
            if (File.Exists(Path.Combine(d, "Server.sln")))
            {
                return d;
            }
        }

        return Environment.CurrentDirectory;
    }

    private static double MeasureDispatchMicroseconds(WorkerPool pool)
    {
        for (int i = 0; i < 20000; i++)
        {
            pool.Parallel(pool.WorkerCount, &Nop, 0);
        }

        const int Reps = 100000;
        long t0 = Stopwatch.GetTimestamp();
        for (int i = 0; i < Reps; i++)
        {
            pool.Parallel(pool.WorkerCount, &Nop, 0);
        }

        return Stopwatch.GetElapsedTime(t0).TotalMicroseconds / Reps;
    }

    private static void Nop(int i, nint ctx)
    {
    }

    /// <summary>Best seconds per pass over all matrices, after one warm-up pass; passes until minSeconds spent.</summary>
    private static double GemvSeconds(ushort*[] mats, int n, int k, int m, WorkerPool pool, double minSeconds)
    {
        float[] x = new float[m * k];
        var rng = new Random(1);
        for (int i = 0; i < x.Length; i++)
        {
            x[i] = (float)(rng.NextDouble() - 0.5);
        }

        float[] y = new float[m * n];
        return BestPass(() =>
        {
            fixed (float* px = x)
            fixed (float* py = y)
            {
                foreach (ushort* w in mats)
                {
                    Bf16Gemv.Multiply(w, n, k, px, m, py, pool: pool);
                }
            }
        }, minSeconds);
    }

    private static double SiluSeconds(ushort*[] mats, int inter, int k, int m, WorkerPool pool, double minSeconds)
    {
        float[] x = new float[m * k];
        float[] h = new float[m * inter];
        return BestPass(() =>
        {
            fixed (float* px = x)
            fixed (float* ph = h)
            {
                foreach (ushort* w in mats)
                {
                    Bf16Gemv.SiluGateUp(w, inter, k, px, m, ph, pool);
                }
            }
        }, minSeconds);
    }

    private static double TorchLinearSeconds(HugePageBuffer weights, int count, int n, int k, double minSeconds)
    {
        torch.set_num_threads(Environment.ProcessorCount);
        using var scope = torch.NewDisposeScope();
        var ts = new Tensor[count];
        long matBytes = 2L * n * k;
        for (int i = 0; i < count; i++)
        {
            ts[i] = torch.empty(new long[] { n, k }, dtype: ScalarType.BFloat16);
            new ReadOnlySpan<byte>((byte*)weights.Pointer + (i * matBytes), (int)matBytes).CopyTo(ts[i].bytes);
        }

        Tensor x = torch.randn(new long[] { 1, k }, dtype: ScalarType.BFloat16);
        double best = BestPass(() =>
        {
            foreach (Tensor w in ts)
            {
                using Tensor y = torch.nn.functional.linear(x, w);
            }
        }, minSeconds);
        foreach (Tensor t in ts)
        {
            t.Dispose();
        }

        return best;
    }

    /// <summary>
    /// Best seconds of one pass. The two cores are shared with other jobs, so each pass is checked against
    /// /proc/stat: a pass during which other processes used more than ~5% of the machine is "contended".
    /// Passes continue until at least 2 clean ones and <paramref name="minSeconds"/> are in, or
    /// <see cref="MaxSecondsPerItem"/> runs out; the best clean pass wins (the best contended one otherwise,
    /// counted in <see cref="s_contended"/>).
    /// </summary>
    private static double BestPass(Action pass, double minSeconds)
    {
        pass();
        double bestClean = double.MaxValue, bestAny = double.MaxValue;
        var sw = Stopwatch.StartNew();
        int clean = 0;
        while ((clean < 2 || sw.Elapsed.TotalSeconds < minSeconds) && sw.Elapsed.TotalSeconds < MaxSecondsPerItem)
        {
            (long busy0, long own0) = CpuSample();
            long t0 = Stopwatch.GetTimestamp();
            pass();
            double dt = Stopwatch.GetElapsedTime(t0).TotalSeconds;
            (long busy1, long own1) = CpuSample();
            bestAny = Math.Min(bestAny, dt);
            if (IsClean(busy1 - busy0, own1 - own0, dt))
            {
                clean++;
                bestClean = Math.Min(bestClean, dt);
            }
        }

        if (clean == 0)
        {
            s_contended++;
            return bestAny;
        }

        return bestClean;
    }

    private const double MaxSecondsPerItem = 2.0;
    private static int s_contended;

    /// <summary>Read bandwidth (GB/s) over 512 MB, best clean sample within ~2 s.</summary>
    private static double CleanReadBandwidth(WorkerPool pool)
    {
        double bestClean = 0, bestAny = 0;
        var sw = Stopwatch.StartNew();
        int clean = 0;
        while (clean < 3 && sw.Elapsed.TotalSeconds < 2)
        {
            (long busy0, long own0) = CpuSample();
            long t0 = Stopwatch.GetTimestamp();
            double gbps = MachineLimits.MeasureReadBandwidth(512L << 20, 3, pool);
            double dt = Stopwatch.GetElapsedTime(t0).TotalSeconds;
            (long busy1, long own1) = CpuSample();
            bestAny = Math.Max(bestAny, gbps);
            if (IsClean(busy1 - busy0, own1 - own0, dt))
            {
                clean++;
                bestClean = Math.Max(bestClean, gbps);
            }
        }

        return clean > 0 ? bestClean : bestAny;
    }

    private static bool IsClean(long busyTicks, long ownTicks, double seconds)
    {
        // Clock ticks are 10 ms: allow one tick of slack plus 5% of the machine.
        double otherTicks = busyTicks - ownTicks;
        return otherTicks <= 1 + (0.05 * seconds * 100 * Environment.ProcessorCount);
    }

    /// <summary>(busy ticks of the whole machine, CPU ticks of this process) from /proc.</summary>
    private static (long Busy, long Own) CpuSample()
    {
        try
        {
            string cpu = File.ReadLines("/proc/stat").First();
            long[] f = cpu.Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(1).Select(long.Parse).ToArray();

            // user nice system idle iowait irq softirq steal ...: busy excludes idle and iowait.
            long busy = f[0] + f[1] + f[2] + f[5] + f[6] + (f.Length > 7 ? f[7] : 0);
            string self = File.ReadAllText("/proc/self/stat");
            string[] g = self[(self.LastIndexOf(')') + 2)..].Split(' ');

            // Fields after the command: state is index 0, so utime (14th) is index 11, stime index 12.
            long own = long.Parse(g[11]) + long.Parse(g[12]);
            return (busy, own);
        }
        catch (IOException)
        {
            return (0, 0);
        }
    }

    /// <summary>Fills the buffer with bf16 values in (-1, 1) (a fast xorshift; values only need to be finite and varied).</summary>
    private static void FillRandomBf16(HugePageBuffer buffer, WorkerPool pool)
    {
        long count = buffer.Length<ushort>();
        int parts = 64;
        long per = (count + parts - 1) / parts;
        ushort* p = buffer.GetPointer<ushort>();
        pool.Parallel(parts, part =>
        {
            ulong s = 0x9E3779B97F4A7C15UL * (ulong)(part + 1);
            long end = Math.Min(count, (part + 1) * per);
            for (long i = part * per; i < end; i++)
            {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;

                // sign | exponent 117..124 (~2^-10 .. 2^-3) | 7-bit mantissa
                p[i] = (ushort)(((uint)(s >> 63) << 15) | ((117u + (uint)((s >> 40) & 7)) << 7) | (uint)((s >> 20) & 0x7F));
            }
        });
    }
}
