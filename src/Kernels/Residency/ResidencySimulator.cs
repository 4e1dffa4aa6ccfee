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

    /// <summary>The activation-aware baseline (<see cref="ActivationAwarePlan"/>) over a recorded trace: request
    /// histories learned as the steps go, Belady on the plan they give, and prefetch of the most activated experts.</summary>
    public static ResidencyStats ReplayActivationAware(RoutingTrace trace, int capacity, int prefetchDepth)
    {
        var plan = new ActivationAwarePlan(trace.Layers, trace.Experts);
        var cache = new ExpertCache(capacity, new LookaheadPolicy(plan));
        var steps = trace.StepUses();
        for (int s = 0; s < trace.Steps.Count; s++)
        {
            var step = trace.Steps[s];
            plan.BeginStep(step.Step, step.Segments.Select(g => g.SequenceId));
            for (int l = 0; l < trace.Layers; l++)
            {
                long now = plan.At(l);
                foreach (int e in steps[s].ExpertsByLayer[l])
                {
                    cache.Use(new ExpertId(l, e), now);
                    if (prefetchDepth == 0) continue;
                    foreach (var (_, next) in plan.Upcoming(now, prefetchDepth))
                        if (!cache.IsResident(next)) cache.Prefetch(next, now);
                }
                if (step.ExpertsOfRow[l].Length == 0) continue;
                int row = 0;
                foreach (var seg in step.Segments)
                    for (int r = 0; r < seg.Rows; r++, row++)
                        plan.Record(seg.SequenceId, l, step.ExpertsOfRow[l][row]);
            }
        }
        return cache.Stats();
    }
}
