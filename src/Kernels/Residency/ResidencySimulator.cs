using MoeServer.Kernels.Model;

namespace MoeServer.Kernels.Residency;

/// <summary>How much of the future a replayed policy is told.</summary>
public enum PlanVisibility
{
    /// <summary>Nothing announced (lru, lfu; lookahead then only predicts from the last step).</summary>
    None,
    /// <summary>Each step's uses of every layer, announced when the step starts: exact pre-gating.</summary>
    WholeStep,
}

/// <summary>
/// Replays expert uses through an <see cref="ExpertCache"/>. <see cref="Replay"/> takes a flat sequence (time =
/// position); <see cref="ReplaySteps"/> takes engine steps and drives the same <see cref="PlanBook"/> an expert node
/// keeps, so its figures are what the live residency would do with the same uses.
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

    /// <summary>Replays whole steps: announces each step's uses as <paramref name="visibility"/> says, then runs
    /// every layer's experts; after each use a lookahead policy may prefetch the next <paramref name="prefetchDepth"/>
    /// announced experts.</summary>
    /// <param name="initiallyResident">Experts resident before the first step (a live node's warm start), in the
    /// order they were admitted.</param>
    public static ResidencyStats ReplaySteps(IReadOnlyList<StepUses> steps, int numLayers, int capacity, string policy,
        PlanVisibility visibility, int prefetchDepth = 0, IEnumerable<ExpertId>? initiallyResident = null)
    {
        var book = new PlanBook(numLayers);
        var cache = new ExpertCache(capacity, ResidencyPolicy.Create(policy, book));
        foreach (var e in initiallyResident ?? []) cache.Admit(e);
        bool prefetch = cache.Policy is LookaheadPolicy && prefetchDepth > 0;
        foreach (var step in steps)
        {
            if (visibility == PlanVisibility.WholeStep)
                for (int l = 0; l < step.ExpertsByLayer.Count; l++) book.Announce(step.Step, l, step.ExpertsByLayer[l]);
            for (int l = 0; l < step.ExpertsByLayer.Count; l++)
            {
                foreach (int e in step.ExpertsByLayer[l])
                {
                    var id = new ExpertId(l, e);
                    long now = book.Consume(id, step.Step);
                    cache.Use(id, now);
                    if (!prefetch) continue;
                    foreach (var (_, next) in book.Upcoming(now, prefetchDepth))
                        if (!cache.IsResident(next)) cache.Prefetch(next, now);
                }
            }
        }
        return cache.Stats();
    }
}
