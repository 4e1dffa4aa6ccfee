using MoeServer.Kernels.Model;

namespace MoeServer.Kernels.Residency;

/// <summary>
/// Decides which resident expert makes room when the cache is full. The cache tells it every use, load and eviction;
/// a policy only ranks, it never loads or frees anything itself.
/// </summary>
public abstract class ResidencyPolicy
{
    public abstract string Name { get; }

    public virtual void Used(ExpertId expert, long now)
    {
    }

    public virtual void Loaded(ExpertId expert, long now)
    {
    }

    public virtual void Evicted(ExpertId expert)
    {
    }

    /// <summary>The candidate to evict at <paramref name="now"/> (candidates are resident and not in use).</summary>
    public abstract ExpertId Victim(IReadOnlyCollection<ExpertId> candidates, long now);

    /// <summary>Whether loading <paramref name="incoming"/> ahead of its use is worth evicting
    /// <paramref name="victim"/>; only a policy that knows the future can say yes.</summary>
    public virtual bool WorthPrefetching(ExpertId incoming, ExpertId victim, long now) => false;

    /// <summary>The policy by its configuration name (<c>lru</c>, <c>lfu</c>, <c>lookahead</c>).</summary>
    public static ResidencyPolicy Create(string name, IExpertPlan? plan = null) => name.Trim().ToLowerInvariant() switch
    {
        "lru" => new LruPolicy(),
        "lfu" => new LfuPolicy(),
        "lookahead" => new LookaheadPolicy(plan ?? throw new ArgumentException("the lookahead policy needs a plan", nameof(plan))),
        _ => throw new ArgumentException($"unknown residency policy '{name}' (lru, lfu or lookahead)", nameof(name)),
    };
}
