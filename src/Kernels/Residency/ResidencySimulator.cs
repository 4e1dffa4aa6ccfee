using MoeServer.Kernels.Model;

namespace MoeServer.Kernels.Residency;

/// <summary>
/// Replays a sequence of expert uses through an <see cref="ExpertCache"/>: before each use, a policy with a plan may
/// prefetch the next <c>prefetchDepth</c> planned experts (loads that overlap compute in the live engine).
/// </summary>
public static class ResidencySimulator
{
    public static ResidencyStats Replay(IReadOnlyList<ExpertId> uses, int capacity, ResidencyPolicy policy, int prefetchDepth = 0)
    {
        var cache = new ExpertCache(capacity, policy);
        var plan = (policy as LookaheadPolicy)?.Plan;
        for (int t = 0; t < uses.Count; t++)
        {
            cache.Use(uses[t], t);
            if (plan is null || prefetchDepth == 0) continue;
            foreach (var (_, next) in plan.Upcoming(t, prefetchDepth).DistinctBy(u => u.Expert))
                if (!cache.IsResident(next)) cache.Prefetch(next, t);
        }
        return cache.Stats();
    }
}
