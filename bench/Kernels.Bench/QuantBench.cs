using System.Diagnostics;
using System.Runtime.Intrinsics.X86;
using System.Text;
using MoeServer.Kernels.Native;
using MoeServer.Kernels.Quantization;

namespace MoeServer.Kernels.Bench;

/// <summary>QuantGemv per ggml block type at the bench preset's expert shapes, beside Bf16Gemv, over DRAM.</summary>
internal static unsafe partial class Program
{
    private const long QuantWorkingSetBytes = 400L * 1000 * 1000;

    private static readonly GgmlType[] QuantTypes =
    {
        GgmlType.Q8_0, GgmlType.Q6_K, GgmlType.Q5_K, GgmlType.Q5_1, GgmlType.Q5_0, GgmlType.Q4_K, GgmlType.Q4_1, GgmlType.Q4_0, GgmlType.F16,
    };

    /// <summary>A measured read bandwidth outside this range is taken to be a measuring fault, re-measured, and never divided by.</summary>
    private const double PlausibleReadMinGBps = 2, PlausibleReadMaxGBps = 400;

    private static int QuantBench(string outPath, WorkerPool pool, bool quick)
    {
        var md = new StringBuilder();
        void Line(string s)
        {
            Console.WriteLine(s);
            md.AppendLine(s);
        }

        var total = Stopwatch.StartNew();
        double read = double.NaN;
        var reads = new List<double>();
        for (int attempt = 0; attempt < 3; attempt++)
        {
            double r = MachineLimits.MeasureReadBandwidth(1L << 30, quick ? 3 : 8, pool);
            reads.Add(r);
            if (r is >= PlausibleReadMinGBps and <= PlausibleReadMaxGBps)
            {
                read = r;
                break;
            }
        }

        string readNote = double.IsNaN(read)
            ? $"implausible in all {reads.Count} attempts ({string.Join(", ", reads.Select(r => r.ToString("F1")))} GB/s): no % of read is given"
            : reads.Count > 1 ? $"{read:F1} GB/s (after {reads.Count - 1} implausible attempt(s): {string.Join(", ", reads.SkipLast(1).Select(r => r.ToString("F1")))})" : $"{read:F1} GB/s";
        string Pct(double gbps) => double.IsNaN(read) ? "n/a" : $"{100 * gbps / read:F0}%";

        Line("# Quantized GEMV benchmark (QuantGemv beside Bf16Gemv)");
        Line(string.Empty);
        Line($"Run {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC, .NET {Environment.Version}, `dotnet run -c Release --project bench/Kernels.Bench -- --quant{(quick ? " --quick" : string.Empty)}`.");
        Line(string.Empty);
        Line("| Quantity | Value |");
        Line("|---|---|");
        Line($"| CPU model (/proc/cpuinfo) | {ReadCpuModelLine()} |");
        Line($"| Cores (threads used) | {Environment.ProcessorCount} ({pool.WorkerCount}) |");
        Line($"| ISA | AVX2 {Avx2.IsSupported}, FMA {Fma.IsSupported}, AVX-VNNI {AvxVnni.IsSupported}, AVX-512BW {Avx512BW.IsSupported} |");
        Line($"| QuantGemv path | {QuantGemv.HardwarePath} |");
        Line($"| Bf16Gemv path | {Bf16Gemv.HardwarePath} |");
        Line($"| Read bandwidth, all threads, 1 GiB huge-page buffer (MachineLimits) | {readNote} |");
        Line(string.Empty);
        Line($"Shapes are the `bench` preset's expert matrices (W [N x K], y = x·Wᵀ). Each matrix is copied over a {QuantWorkingSetBytes / 1e6:F0} MB");
        Line("huge-page working set and the copies are cycled, so the weights come from DRAM. GB/s counts weight bytes only");
        Line("(the type's own bytes: 4.5 bits per weight for Q4_0 ... 16 for bf16), so at a bandwidth-bound M=1 a type that reaches");
        Line("the same GB/s as bf16 is faster per call by bf16's bytes / its bytes. M=1: best pass of 5 (read probe, 2 passes) pairs,");
        Line("\"% paired\" the median of pass / probe; M=8: best pass, and its time relative to M=1 (1.0 = the 8 rows cost no more");
        Line("than one). Activations are quantized inside each call (included in the time).");
        Line(string.Empty);
        Line($"| type | bits/weight | shape (N x K) | role | M=1 µs/call | M=1 GB/s | M=1 % paired read | M=1 % of limits read | M=8 µs/call | M=8 GB/s | M=8 / M=1 time |");
        Line("|---|---|---|---|---|---|---|---|---|---|---|");
        using var buffer = new HugePageBuffer(QuantWorkingSetBytes);
        var rng = new Random(5);
        foreach ((int n, int k, string role) in new[] { (2816, 1024, "gate/up"), (1024, 2816, "down") })
        {
            var wf = new float[(long)n * k];
            for (int i = 0; i < wf.Length; i++)
            {
                wf[i] = (float)((rng.NextDouble() - 0.5) * 0.05);
            }

            var x = new float[8 * k];
            for (int i = 0; i < x.Length; i++)
            {
                x[i] = (float)(rng.NextDouble() - 0.5);
            }

            var y = new float[8 * n];
            foreach (GgmlType type in QuantTypes.Prepend(GgmlType.F32))
            {
                // F32 stands for the bf16 baseline row.
                bool bf16 = type == GgmlType.F32;
                if (!bf16 && !GgmlTypeInfo.Fits(type, k))
                {
                    continue;
                }

                long matBytes = bf16 ? 2L * n * k : GgmlTypeInfo.RowSize(type, k) * n;
                byte[] one = new byte[matBytes];
                if (bf16)
                {
                    fixed (byte* p = one)
                    {
                        for (long i = 0; i < (long)n * k; i++)
                        {
                            ((ushort*)p)[i] = (ushort)(BitConverter.SingleToUInt32Bits(wf[i]) >> 16);
                        }
                    }
                }
                else
                {
                    QuantizeReference.Quantize(type, wf, one);
                }

                int count = (int)(buffer.ByteLength / matBytes);
                byte* basePtr = buffer.GetPointer<byte>();
                for (int i = 0; i < count; i++)
                {
                    one.AsSpan().CopyTo(new Span<byte>(basePtr + (i * matBytes), (int)matBytes));
                }

                Action Pass(int m) => () =>
                {
                    fixed (float* px = x)
                    fixed (float* py = y)
                    {
                        for (int i = 0; i < count; i++)
                        {
                            byte* w = basePtr + (i * matBytes);
                            if (bf16)
                            {
                                Bf16Gemv.Multiply((ushort*)w, n, k, px, m, py, pool: pool);
                            }
                            else
                            {
                                QuantGemv.Multiply(new QuantizedMatrix(w, type, n, k), px, m, py, pool: pool);
                            }
                        }
                    }
                };

                Paired m1 = quick ? new Paired(count * matBytes / BestPass(Pass(1), 0.2) / 1e9, double.NaN, double.NaN) : MeasurePaired(Pass(1), count * matBytes, pool);
                double t8 = BestPass(Pass(8), quick ? 0.2 : 0.5) / count;
                double us1 = matBytes / (m1.GBps * 1e3);
                string name = bf16 ? "bf16 (Bf16Gemv)" : type.ToString();
                double bits = 8.0 * matBytes / ((long)n * k);
                Line($"| {name} | {bits:F2} | {n} x {k} | {role} | {us1:F0} | {m1.GBps:F1} | {(double.IsNaN(m1.Ratio) ? "-" : $"{100 * m1.Ratio:F0}%")} | {Pct(m1.GBps)} | {t8 * 1e6:F0} | {matBytes / t8 / 1e9:F1} | {t8 * 1e6 / us1:F2} |");
            }
        }

        Line(string.Empty);
        Line(s_contended == 0
            ? "Every figure comes from passes during which other processes used < 5% of the CPUs."
            : $"{s_contended} figure(s) had no pass free of other processes' CPU use (> 5%); they are best-of-contended.");
        Line($"Total bench time {total.Elapsed.TotalSeconds:F1} s.");
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(outPath))!);
        File.WriteAllText(outPath, md.ToString());
        Console.WriteLine($"wrote {outPath}");
        return 0;
    }

    private static string ReadCpuModelLine()
    {
        try
        {
            string? line = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal));
            return line is null ? "unknown" : line[(line.IndexOf(':') + 1)..].Trim();
        }
        catch (IOException)
        {
            return "unknown";
        }
    }
}
