using TorchSharp;
using static TorchSharp.torch;

namespace MoeServer.Kernels.Model;

public sealed partial class MoeModel
{
    private readonly Lock _gateStackLock = new();
    private Tensor? _gateStack;

    /// <summary>
    /// Speculative pre-gating for layer-wise checkpoints (Pre-gated MoE applied to Mixtral-style models): the gates of
    /// layers <paramref name="layer"/>+1 .. +<paramref name="horizon"/> applied to the residual stream
    /// <paramref name="residual"/> [T, H] fp32 after layer <paramref name="layer"/>'s attention block (what the engine
    /// passes to <see cref="BeginMoe"/>), i.e. per row top-k of softmax(RMSNorm(x, postnorm[l+d]) · gate[l+d]) with
    /// each segment's override for layer l+d. Dense layers and layers past the last are left out. A prediction only;
    /// routing stays exact when those layers run.
    /// </summary>
    /// <exception cref="InvalidOperationException">A router-decoupled model: its routing is known exactly up front.</exception>
    public SpeculativeRouting SpeculateExperts(int layer, Tensor residual, BatchLayout batch, int horizon)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(horizon);
        return Speculate(layer, residual, batch, 1, horizon);
    }

    /// <summary><see cref="SpeculateExperts"/> for distances <paramref name="firstDistance"/>..<paramref name="lastDistance"/>;
    /// distance 0 is the layer's own gate on its own input, which is its exact routing (a check of the formula).</summary>
    internal SpeculativeRouting Speculate(int layer, Tensor residual, BatchLayout batch, int firstDistance, int lastDistance)
    {
        if (Weights.Router is not null)
            throw new InvalidOperationException(
                "speculative lookahead gates are for layer-wise MoE checkpoints; this model is router-decoupled (readme_moe): "
                + "its decoupled router already gives every layer's experts exactly when Embed runs (BatchLayout.RouterProbabilities)");
        ArgumentOutOfRangeException.ThrowIfNegative(layer);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(layer, Config.NumLayers);
        int T = batch.TotalTokens;
        if (residual.ndim != 2 || residual.shape[0] != T || residual.shape[1] != Config.HiddenSize)
            throw new ArgumentException(
                $"residual must be [{T}, {Config.HiddenSize}] (the batch's rows), got [{string.Join(", ", residual.shape)}]", nameof(residual));

        var targets = new List<int>();
        for (int d = firstDistance; d <= lastDistance && layer + d < Config.NumLayers; d++)
            if (Weights.Layers[layer + d].IsSparse) targets.Add(layer + d);
        return SpeculateLayers(layer, targets, residual, batch);
    }

    /// <summary>
    /// Every sparse layer's experts predicted for tokens not yet in their sequences (one per segment, e.g. just sampled):
    /// each layer's gate applied to the token's embedding, the residual stream before any layer. Cheap (no attention),
    /// and known before the step that appends the tokens: what a scheduler can batch by for a layer-wise model.
    /// </summary>
    public SpeculativeRouting SpeculateFromEmbeddings(BatchLayout nextTokens)
    {
        if (Weights.Router is not null)
            throw new InvalidOperationException("a router-decoupled model is pre-gated exactly (PreGate); speculation is for layer-wise models");
        using var ids = ValidatedTokenIds(nextTokens);
        using var x = Weights.Embedding.index_select(0, ids).to(ScalarType.Float32);
        var targets = Enumerable.Range(0, Config.NumLayers).Where(l => Weights.Layers[l].IsSparse).ToList();
        return SpeculateLayers(-1, targets, x, nextTokens);
    }

    /// <summary>Predicted routing of <paramref name="targets"/> (ascending sparse layers) from one residual stream.</summary>
    private SpeculativeRouting SpeculateLayers(int layer, List<int> targets, Tensor residual, BatchLayout batch)
    {
        int T = batch.TotalTokens, E = Config.NumExperts;
        if (targets.Count == 0) return new SpeculativeRouting(layer, []);

        // One matmul over the contiguous block of stacked gates from the first to the last predicted layer (a dense
        // layer in between costs E zero columns). RMSNorm's weight is folded into each gate, so the normalisation
        // itself is shared: RMSNorm(x, w) · g = rsqrt(mean x² + eps) · (x · (g ⊙ w)).
        int lo = targets[0], width = (targets[^1] - lo + 1) * E;
        float[] logits;
        using (var scope = torch.NewDisposeScope())
        {
            var x = residual.to(ScalarType.Float32);
            var gates = GateStack().narrow(0, (long)lo * E, width);
            var inv = torch.rsqrt(x.square().mean([-1], keepdim: true) + _rmsEps);
            logits = TorchInterop.ToFloatArray(torch.matmul(x, gates.t()).mul_(inv));
        }

        var layers = new List<SpeculatedLayer>(targets.Count);
        Span<double> p = stackalloc double[E];
        foreach (int target in targets)
        {
            int offset = (target - lo) * E;
            var experts = new int[T][];
            for (int t = 0; t < T; t++)
            {
                var ov = batch.Segments[batch.SegmentOfRow[t]].RoutingOrDefault;
                experts[t] = RouteRow(target, logits.AsSpan(t * width + offset, E), ov, p).Experts;
            }
            layers.Add(new SpeculatedLayer(target, target - layer, experts));
        }
        return new SpeculativeRouting(layer, layers);
    }

    /// <summary>Every layer's gate with its post-attention norm weight folded in, [L * E, H] fp32 (zeros for dense
    /// layers), built on first use: weights never change, and a fold per call would cost as much as a decode step's
    /// gating.</summary>
    private Tensor GateStack()
    {
        lock (_gateStackLock)
        {
            if (_gateStack is not null) return _gateStack;
            using var scope = torch.NewDisposeScope();
            int E = Config.NumExperts, H = Config.HiddenSize;
            var perLayer = Weights.Layers
                .Select(w => w.Router is { } g ? g * w.PostAttentionNorm : torch.zeros(E, H, ScalarType.Float32, device: Device))
                .ToArray();
            // Detached: a caller's dispose scope must not take the cached stack with it.
            _gateStack = torch.cat(perLayer, 0).contiguous().DetachFromDisposeScope();
            return _gateStack;
        }
    }
}
