using static TorchSharp.torch;

namespace MoeServer.Kernels.Model;

/// <summary>The tensors of one decoder layer, in the layout the runtime computes with.</summary>
public sealed class DecoderLayerWeights : IDisposable
{
    public required Tensor InputNorm { get; init; }
    public required Tensor PostAttentionNorm { get; init; }
    /// <summary>q, k and v projections stacked: [nH*hd + 2*nKV*hd, H].</summary>
    public required Linear Qkv { get; init; }
    public required Linear Output { get; init; }
    public Tensor? QNorm { get; init; }
    public Tensor? KNorm { get; init; }

    /// <summary>Router [E, H] fp32 (null on dense layers). Kept fp32 so expert choice is not perturbed by rounding.</summary>
    public Tensor? Router { get; init; }
    /// <summary>Routed experts, indexed by expert id; empty when <see cref="RoutedExpertsLoaded"/> is false.</summary>
    public IReadOnlyList<ExpertFfn> Experts { get; init; } = [];
    /// <summary>False on a backbone-only load (<see cref="WeightSet.Backbone"/>): the experts run on expert nodes.</summary>
    public bool RoutedExpertsLoaded { get; init; } = true;
    public ExpertFfn? SharedExpert { get; init; }
    /// <summary>[1, H] fp32: sigmoid(x . g) scales the shared expert; null: the shared expert is ungated (weight 1).</summary>
    public Tensor? SharedExpertGate { get; init; }
    /// <summary>Plain MLP for layers that are not sparse (Qwen-MoE mlp_only_layers / decoder_sparse_step).</summary>
    public ExpertFfn? DenseMlp { get; init; }

    /// <summary>Routed experts (a gate of its own, or, in <c>readme_moe</c>, the decoupled router's choice) rather
    /// than a dense MLP.</summary>
    public required bool IsSparse { get; init; }

    public void Dispose()
    {
        InputNorm.Dispose();
        PostAttentionNorm.Dispose();
        Qkv.Dispose();
        Output.Dispose();
        QNorm?.Dispose();
        KNorm?.Dispose();
        Router?.Dispose();
        foreach (var e in Experts) e.Dispose();
        SharedExpert?.Dispose();
        SharedExpertGate?.Dispose();
        DenseMlp?.Dispose();
    }
}
