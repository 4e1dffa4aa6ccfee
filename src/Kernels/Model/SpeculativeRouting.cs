namespace MoeServer.Kernels.Model;

/// <summary>
/// The predicted routing of one later layer: every row's top-k experts (highest probability first) and the distinct
/// experts the batch would need there, which is what a prefetch loads.
/// </summary>
public sealed class SpeculatedLayer
{
    public SpeculatedLayer(int layer, int distance, int[][] expertsOfToken)
    {
        Layer = layer;
        Distance = distance;
        ExpertsOfToken = expertsOfToken;
        NeededExperts = expertsOfToken.SelectMany(e => e).Distinct().Order().ToArray();
    }

    /// <summary>The layer whose routing is predicted.</summary>
    public int Layer { get; }
    /// <summary>Layers ahead of the layer the prediction was made at (<see cref="SpeculativeRouting.FromLayer"/>).</summary>
    public int Distance { get; }
    public int[][] ExpertsOfToken { get; }
    /// <summary>The batch's distinct predicted experts of <see cref="Layer"/>, ascending.</summary>
    public int[] NeededExperts { get; }
}

/// <summary>
/// Pre-gated-MoE-style lookahead for a layer-wise checkpoint: the gates of later layers applied to the residual stream
/// at <see cref="FromLayer"/>. A guess for prefetching; the layers still route exactly when they run.
/// </summary>
public sealed record SpeculativeRouting(int FromLayer, IReadOnlyList<SpeculatedLayer> Layers)
{
    /// <summary>The prediction for <paramref name="layer"/>, or null when it is not in the horizon (or dense).</summary>
    public SpeculatedLayer? ForLayer(int layer) => Layers.FirstOrDefault(p => p.Layer == layer);

    /// <summary>Every predicted layer's needed experts, nearest layer first (the order to prefetch in).</summary>
    public IEnumerable<ExpertId> NeededExperts() =>
        Layers.OrderBy(p => p.Distance).SelectMany(p => p.NeededExperts.Select(e => new ExpertId(p.Layer, e)));
}
