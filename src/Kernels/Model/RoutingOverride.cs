using MoeServer.Kernels.Config;

namespace MoeServer.Kernels.Model;

/// <summary>
/// Per-request changes to expert routing: a different number of active experts (SMoE-Dropout / AdapMoE style)
/// and experts switched off (MoTE style). Disabled experts cannot be picked; the softmax stays over all experts.
/// </summary>
public sealed record RoutingOverride(int? TopKExperts = null, IReadOnlySet<(int Layer, int Expert)>? DisabledExperts = null)
{
    public static RoutingOverride None { get; } = new();

    public bool IsDisabled(int layer, int expert) => DisabledExperts?.Contains((layer, expert)) == true;

    /// <summary>
    /// What is wrong with this override for the model, in words an API client can act on (each names the request
    /// field, top_k_experts or disabled_experts); empty when it is valid.
    /// </summary>
    public IReadOnlyList<string> GetValidationErrors(ModelConfig cfg)
    {
        ArgumentNullException.ThrowIfNull(cfg);
        var errors = new List<string>();
        int E = cfg.NumExperts, L = cfg.NumLayers;
        if (TopKExperts is { } k && (k < 1 || k > E))
            errors.Add($"top_k_experts must be between 1 and {E} (the model's number of experts), got {k}");
        if (DisabledExperts is null) return errors;

        var disabledPerLayer = new Dictionary<int, HashSet<int>>();
        foreach (var (layer, expert) in DisabledExperts.OrderBy(d => d.Layer).ThenBy(d => d.Expert))
        {
            if (layer < 0 || layer >= L)
                errors.Add($"disabled_experts: layer {layer} does not exist (the model has layers 0..{L - 1})");
            else if (!cfg.IsSparseLayer(layer))
                errors.Add($"disabled_experts: layer {layer} is a dense MLP layer and has no experts to disable");
            else if (expert < 0 || expert >= E)
                errors.Add($"disabled_experts: expert {expert} of layer {layer} does not exist (experts are 0..{E - 1})");
            else if (disabledPerLayer.TryGetValue(layer, out var set)) set.Add(expert);
            else disabledPerLayer[layer] = [expert];
        }
        // A layer with every expert off would route tokens nowhere.
        foreach (var (layer, set) in disabledPerLayer.OrderBy(p => p.Key))
        {
            if (set.Count == E)
                errors.Add($"disabled_experts: all {E} experts of layer {layer} are disabled; at least one must stay enabled");
        }
        return errors;
    }

    /// <summary>Throws <see cref="ArgumentException"/> listing every problem <see cref="GetValidationErrors"/> finds.</summary>
    public void Validate(ModelConfig cfg)
    {
        var errors = GetValidationErrors(cfg);
        if (errors.Count > 0) throw new ArgumentException(string.Join("; ", errors));
    }
}
