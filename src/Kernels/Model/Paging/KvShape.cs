using MoeServer.Kernels.Config;

namespace MoeServer.Kernels.Model.Paging;

/// <summary>The element type KV blocks are stored in: bf16 by default (half the memory of fp32), fp32 for parity runs.</summary>
public enum KvDType
{
    BFloat16,
    Float32,
}

/// <summary>
/// What one token costs in KV memory: keys and values for every layer and KV head (and, for <c>readme_moe</c>, for the
/// decoupled router's own attention, which is paged with the same block table at the same positions).
/// </summary>
public sealed record KvShape(int Layers, int KvHeads, int HeadDim, KvDType DType = KvDType.BFloat16,
    int RouterLayers = 0, int RouterKvHeads = 0, int RouterHeadDim = 0)
{
    public int ElementBytes => DType == KvDType.Float32 ? sizeof(float) : sizeof(ushort);

    /// <summary>Keys + values of one position over all layers, the router's included.</summary>
    public long BytesPerToken =>
        2L * ElementBytes * ((long)Layers * KvHeads * HeadDim + (long)RouterLayers * RouterKvHeads * RouterHeadDim);

    public long BytesPerBlock(int blockSize) => BytesPerToken * blockSize;

    public static KvShape For(ModelConfig config, KvDType dtype = KvDType.BFloat16)
    {
        ArgumentNullException.ThrowIfNull(config);
        var r = config.Router;
        return new KvShape(config.NumLayers, config.NumKvHeads, config.HeadDim, dtype,
            r?.NumLayers ?? 0, r?.NumKvHeads ?? 0, r?.HeadDim ?? 0);
    }

    public static KvDType ParseDType(string s) => s.Trim().ToLowerInvariant() switch
    {
        "bf16" or "bfloat16" => KvDType.BFloat16,
        "fp32" or "f32" or "float32" => KvDType.Float32,
        _ => throw new ArgumentException($"unknown KV cache dtype '{s}' (expected bf16 or fp32)"),
    };
}
