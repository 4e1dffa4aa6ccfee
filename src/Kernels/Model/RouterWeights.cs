using static TorchSharp.torch;

namespace MoeServer.Kernels.Model;

/// <summary>One block of the decoupled router: a Llama block (GQA attention + dense SwiGLU MLP).</summary>
public sealed class RouterLayerWeights : IDisposable
{
    public required Tensor InputNorm { get; init; }
    /// <summary>q, k and v projections stacked: [rH*rhd + 2*rKV*rhd, Hr].</summary>
    public required Linear Qkv { get; init; }
    public required Linear Output { get; init; }
    public required Tensor PostAttentionNorm { get; init; }
    public required ExpertFfn Mlp { get; init; }

    public void Dispose()
    {
        InputNorm.Dispose();
        Qkv.Dispose();
        Output.Dispose();
        PostAttentionNorm.Dispose();
        Mlp.Dispose();
    }
}

/// <summary>The decoupled router of <c>readme_moe</c>: embedding, blocks, final norm and the head over the experts
/// (fp32, like the layer-wise gates, so expert choice is not perturbed by rounding).</summary>
public sealed class RouterWeights : IDisposable
{
    public required Tensor Embedding { get; init; }
    public required IReadOnlyList<RouterLayerWeights> Layers { get; init; }
    public required Tensor FinalNorm { get; init; }
    /// <summary>[E, Hr] fp32.</summary>
    public required Tensor Head { get; init; }

    public long ParameterCount() =>
        Embedding.numel() + FinalNorm.numel() + Head.numel()
        + Layers.Sum(l => l.InputNorm.numel() + l.Qkv.Weight.numel() + l.Output.Weight.numel() + l.PostAttentionNorm.numel()
                          + l.Mlp.GateUp.Weight.numel() + l.Mlp.Down.Weight.numel());

    public void Dispose()
    {
        foreach (var l in Layers) l.Dispose();
        Embedding.Dispose();
        FinalNorm.Dispose();
        Head.Dispose();
    }
}
