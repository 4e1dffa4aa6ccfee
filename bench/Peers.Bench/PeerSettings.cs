using LLama.Common;
using LLama.Native;

namespace MoeServer.Bench.Peers;

/// <summary>
/// llama.cpp context settings for the comparisons. Its CPU defaults (flash attention, f16 K/V cache) round attention
/// through f16, which moves logits by ~1e-2 on these models; with an f32 cache and flash attention off its arithmetic
/// is f32 throughout, so the correctness checks compare layouts and math rather than llama.cpp's speed settings.
/// </summary>
internal static class PeerSettings
{
    public static ModelParams Exact(string gguf, int context, int threads)
    {
        var p = Defaults(gguf, context, threads);
        p.TypeK = GGMLType.GGML_TYPE_F32;
        p.TypeV = GGMLType.GGML_TYPE_F32;
        p.FlashAttention = false;
        return p;
    }

    /// <summary>What a user running llama.cpp gets: its own defaults for the cache and attention.</summary>
    public static ModelParams Defaults(string gguf, int context, int threads) => new(gguf)
    {
        ContextSize = (uint)context,
        BatchSize = (uint)context,
        UBatchSize = (uint)context,
        GpuLayerCount = 0,
        Threads = threads,
    };
}
