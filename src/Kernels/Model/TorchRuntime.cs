using TorchSharp;

namespace MoeServer.Kernels.Model;

/// <summary>Process-wide torch settings: threads = cores (inter-op 1, the engine parallelises itself).</summary>
public static class TorchRuntime
{
    private static int _initialized;

    public static void Initialize(int? threads = null)
    {
        if (Interlocked.Exchange(ref _initialized, 1) == 1) return;
        torch.set_num_threads(threads ?? Environment.ProcessorCount);
    }
}
