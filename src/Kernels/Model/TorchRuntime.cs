using System.Diagnostics;
using TorchSharp;
using static TorchSharp.torch;

namespace MoeServer.Kernels.Model;

/// <summary>Process-wide torch settings and what this CPU's torch build is fast at.</summary>
public static class TorchRuntime
{
    private static int _initialized;
    private static readonly Lazy<bool> Bf16Fast = new(ProbeBf16Matmul);

    private static int _threads;

    public static void Initialize(int? threads = null)
    {
        if (Interlocked.Exchange(ref _initialized, 1) == 1) return;
        _threads = threads ?? Environment.ProcessorCount;
        torch.set_num_threads(_threads);
    }

    /// <summary>
    /// Decode-sized work runs its heavy kernels on the native worker pool; torch's own ops are then tiny, and its
    /// OpenMP threads, spinning after each op, would steal the cores the pool needs. So torch gets one thread for
    /// small batches and all cores for prefill-sized ones.
    /// </summary>
    public static void UseThreadsFor(int rows)
    {
        Initialize();
        int want = rows <= Linear.NativeMaxRows ? 1 : Environment.ProcessorCount;
        if (want == Volatile.Read(ref _threads)) return;
        _threads = want;
        torch.set_num_threads(want);
    }

    /// <summary>
    /// Whether torch's bf16 matmul beats converting bf16 weights to fp32 and using the fp32 matmul. On CPUs with
    /// AVX-512 BF16 (oneDNN) it is ~4x faster than fp32; without it (AVX2-only machines) torch falls back to a
    /// reference kernel ~100x slower than fp32, so large-batch matmuls convert the weight block instead.
    /// </summary>
    public static bool Bf16MatmulIsFast => Bf16MatmulOverride ?? Bf16Fast.Value;

    /// <summary>Forces the choice above (tests run both paths on any machine); null = probe.</summary>
    internal static bool? Bf16MatmulOverride { get; set; }

    private static bool ProbeBf16Matmul()
    {
        Initialize();
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        var x = torch.randn(128, 512);
        var w = torch.randn(512, 512);
        var xb = x.to(ScalarType.BFloat16);
        var wb = w.to(ScalarType.BFloat16);
        double Time(Func<Tensor> f)
        {
            f().Dispose(); // warm-up
            var sw = Stopwatch.StartNew();
            for (int i = 0; i < 3; i++) f().Dispose();
            return sw.Elapsed.TotalSeconds;
        }
        double bf16 = Time(() => torch.nn.functional.linear(xb, wb));
        double viaFp32 = Time(() =>
        {
            using var wf = wb.to(ScalarType.Float32);
            return torch.nn.functional.linear(x, wf);
        });
        return bf16 < viaFp32;
    }
}
