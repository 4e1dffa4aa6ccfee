namespace MoeServer.Kernels.Model;

/// <summary>Which tensors of a checkpoint a node loads.</summary>
public enum WeightSet
{
    /// <summary>Every tensor: the node computes whole layers itself (single node, embedded default).</summary>
    All,
    /// <summary>Everything except the routed experts (embeddings, attention, norms, routers, shared experts and
    /// their gates, dense MLP layers, LM head): the gateway of a cluster whose experts live on expert nodes.</summary>
    Backbone,
}
