namespace MoeServer.Kernels.Tests.Reference;

/// <summary>
/// Per-sequence state of <see cref="ReferenceRouterDecoupledModel"/>: two independent KV caches, one for the
/// router's Lr layers and one for the backbone's L layers (each a <see cref="ReferenceSequence"/>: post-RoPE keys
/// and values per position). Both always hold the same positions.
/// </summary>
public sealed class ReferenceRouterDecoupledSequence
{
    public ReferenceRouterDecoupledSequence(int routerLayers, int backboneLayers)
        : this(new ReferenceSequence(routerLayers), new ReferenceSequence(backboneLayers))
    {
    }

    private ReferenceRouterDecoupledSequence(ReferenceSequence router, ReferenceSequence backbone)
    {
        Router = router;
        Backbone = backbone;
    }

    /// <summary>The router's KV cache (router_num_hidden_layers layers, [rKV * rhd] per position).</summary>
    public ReferenceSequence Router { get; }

    /// <summary>The backbone's KV cache (num_hidden_layers layers, [nKV * hd] per position).</summary>
    public ReferenceSequence Backbone { get; }

    /// <summary>Number of positions already processed; the next token goes to this position.</summary>
    public int Length => Backbone.Length;

    /// <summary>All tokens fed so far, in order.</summary>
    public IReadOnlyList<int> Tokens => Backbone.Tokens;

    /// <summary>Independent copy (for branching a prefix); cached vectors are shared read-only.</summary>
    public ReferenceRouterDecoupledSequence Clone() => new(Router.Clone(), Backbone.Clone());
}
