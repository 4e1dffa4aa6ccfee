namespace MoeServer.Actors.Experts;

/// <summary>Registry key of the expert shard region (or its proxy on gateway-only nodes).</summary>
public sealed class ExpertRegion;
