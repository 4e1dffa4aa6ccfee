namespace MoeServer.Kernels.Model;

/// <summary>
/// Per-request changes to expert routing: a different number of active experts (SMoE-Dropout / AdapMoE style)
/// and experts switched off (MoTE style). Disabled experts cannot be picked; the softmax stays over all experts.
/// </summary>
public sealed record RoutingOverride(int? TopKExperts = null, IReadOnlySet<(int Layer, int Expert)>? DisabledExperts = null)
{
    public static RoutingOverride None { get; } = new();

    public bool IsDisabled(int layer, int expert) => DisabledExperts?.Contains((layer, expert)) == true;
}
