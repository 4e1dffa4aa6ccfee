namespace MoeServer.Actors.Ops;

/// <summary>What the ops surface asks every node's <see cref="OpsAgent"/> (across nodes as JSON, see
/// <see cref="OpsMessageSerializer"/>). Answers are plain data, ready for tables and <c>--json</c>.</summary>
public static class OpsProtocol
{
    public interface IOpsMessage;

    /// <summary>Answered with <see cref="NodeReport"/>.</summary>
    public sealed record GetNodeReport : IOpsMessage;

    public sealed record NodeReport(string Address, string Role, string Phase, string Detail, string Fingerprint,
        ResidencyReport? Residency) : IOpsMessage;

    /// <summary>A node's expert cache: budget, what is resident and pinned, and its counters since start.</summary>
    public sealed record ResidencyReport(int BudgetExperts, long ExpertBytes, string Policy, string Tier, string[] Resident,
        string[] Pinned, long Uses, long Hits, double HitRate, long DemandLoads, long PrefetchLoads, long PrefetchHits,
        long Evictions, long BytesLoaded, double StallSeconds) : IOpsMessage;

    /// <summary>pin, unpin or evict one expert ("layer.expert") on the node hosting it; answered with <see cref="ActionDone"/>.</summary>
    public sealed record ExpertAction(string Action, string Expert) : IOpsMessage;

    public sealed record ActionDone(bool Ok, string Message) : IOpsMessage;

    /// <summary>The node's actor paths under /user and /system/sharding, <paramref name="Depth"/> levels deep; answered with <see cref="ActorTree"/>.</summary>
    public sealed record GetActorTree(int Depth) : IOpsMessage;

    public sealed record ActorTree(string Address, string[] Paths) : IOpsMessage;

    /// <summary>To every gateway: route no new request to this expert (or again); answered with <see cref="ActionDone"/>.</summary>
    public sealed record SetExpertEnabled(string Expert, bool Enabled) : IOpsMessage;

    /// <summary>Answered with <see cref="RoutingStats"/> by gateway nodes (others answer with empty stats).</summary>
    public sealed record GetRoutingStats : IOpsMessage;

    /// <summary>Tokens the gate routed to each expert ([layer][expert], prefill and decode) and the experts disabled
    /// for new requests.</summary>
    public sealed record RoutingStats(string Address, long[][] Routed, string[] Disabled) : IOpsMessage;
}
