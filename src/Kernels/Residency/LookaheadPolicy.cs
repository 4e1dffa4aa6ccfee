using MoeServer.Kernels.Model;

namespace MoeServer.Kernels.Residency;

/// <summary>
/// Belady on the plan: evicts the resident expert whose next planned use is furthest away (unplanned ones first,
/// least recently used among them). With a plan that knows the whole future this is Belady's optimal MIN.
/// </summary>
public sealed class LookaheadPolicy(IExpertPlan plan) : ResidencyPolicy
{
    private readonly LruPolicy _recency = new();

    public override string Name => "lookahead";

    public IExpertPlan Plan => plan;

    public override void Used(ExpertId expert, long now) => _recency.Used(expert, now);

    public override void Loaded(ExpertId expert, long now) => _recency.Loaded(expert, now);

    public override void Evicted(ExpertId expert) => _recency.Evicted(expert);

    public override ExpertId Victim(IReadOnlyCollection<ExpertId> candidates, long now)
    {
        ExpertId best = default;
        long bestNext = long.MinValue, bestLast = long.MaxValue;
        foreach (var e in candidates)
        {
            long next = plan.NextUse(e, now), last = _recency.LastUse(e);
            if (next > bestNext || (next == bestNext && last < bestLast))
                (best, bestNext, bestLast) = (e, next, last);
        }
        return best;
    }

    /// <summary>Prefetching only pays when the victim is needed later than the expert brought in.</summary>
    public override bool WorthPrefetching(ExpertId incoming, ExpertId victim, long now) =>
        plan.NextUse(victim, now) > plan.NextUse(incoming, now);
}
