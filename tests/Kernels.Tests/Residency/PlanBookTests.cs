using MoeServer.Kernels.Model;
using MoeServer.Kernels.Residency;

namespace MoeServer.Kernels.Tests.Residency;

/// <summary>The plan an expert node keeps (announced uses, next-step prediction) and the step replay built on it.</summary>
public sealed class PlanBookTests
{
    [Fact]
    public void Announced_uses_of_the_current_layer_stay_upcoming_until_they_run()
    {
        var book = new PlanBook(numLayers: 4);
        book.Announce(step: 3, layer: 1, [2, 5]);
        long now = book.Consume(new ExpertId(1, 2), step: 3);
        Assert.Equal(book.TimeOf(3, 1), now);
        Assert.Equal(now, book.NextUse(new ExpertId(1, 5), now)); // same layer, not run yet: needed now
        book.Consume(new ExpertId(1, 5), step: 3);
        Assert.NotEqual(now, book.NextUse(new ExpertId(1, 5), now));
    }

    [Fact]
    public void An_expert_used_every_step_is_predicted_for_the_next_step_at_its_layer()
    {
        var book = new PlanBook(numLayers: 4);
        for (long s = 0; s < 5; s++) book.Consume(new ExpertId(2, 7), s);
        long now = book.TimeOf(4, 3);
        Assert.Equal(book.TimeOf(5, 2), book.NextUse(new ExpertId(2, 7), now));
        Assert.Equal(long.MaxValue, book.NextUse(new ExpertId(2, 6), now)); // never seen, never planned
    }

    [Fact]
    public void A_rarely_used_expert_is_predicted_further_away_than_a_frequent_one()
    {
        var book = new PlanBook(numLayers: 2);
        for (long s = 0; s < 9; s++)
        {
            book.Consume(new ExpertId(0, 1), s);
            if (s % 4 == 0) book.Consume(new ExpertId(0, 3), s);
        }
        long now = book.TimeOf(8, 1); // both ran in step 8
        Assert.Equal(book.TimeOf(9, 0), book.NextUse(new ExpertId(0, 1), now));
        Assert.Equal(book.TimeOf(12, 0), book.NextUse(new ExpertId(0, 3), now));
    }

    [Fact]
    public void Announcements_for_a_step_that_never_ran_are_dropped()
    {
        var book = new PlanBook(numLayers: 2);
        book.Announce(step: 1, layer: 0, [4]); // a request cancelled before step 1 ran
        book.Consume(new ExpertId(0, 4), step: 2);
        Assert.Empty(book.Upcoming(book.TimeOf(2, 0), 10));
    }

    [Fact]
    public void Upcoming_lists_announced_uses_in_engine_order()
    {
        var book = new PlanBook(numLayers: 3);
        book.Announce(step: 0, layer: 2, [1]);
        book.Announce(step: 0, layer: 0, [6, 3]);
        var upcoming = book.Upcoming(0, 10).Select(u => u.Expert).ToArray();
        Assert.Equal([new ExpertId(0, 3), new ExpertId(0, 6), new ExpertId(2, 1)], upcoming);
    }

    /// <summary>Every step needs every expert (a full decode batch): Belady keeps capacity-1 experts and cycles one
    /// slot; lookahead with the step announced plus next-step prediction must do the same, LRU gets nothing.</summary>
    [Fact]
    public void On_a_cyclic_trace_lookahead_matches_Belady_and_lru_misses_everything()
    {
        var steps = Enumerable.Range(0, 50).Select(s => new StepUses(s,
            Enumerable.Range(0, 4).Select(_ => Enumerable.Range(0, 8).ToArray()).ToArray())).ToList();
        var uses = steps.SelectMany(s => s.ExpertsByLayer.SelectMany((es, l) => es.Select(e => new ExpertId(l, e)))).ToList();
        double bound = BeladyBound.NoLoadRate(uses, 8);
        var look = ResidencySimulator.ReplaySteps(steps, 4, 8, "lookahead", PlanVisibility.WholeStep);
        var lru = ResidencySimulator.ReplaySteps(steps, 4, 8, "lru", PlanVisibility.None);
        Assert.InRange(look.NoLoadRate, bound - 0.01, bound);
        Assert.Equal(0, lru.Hits);
    }

    [Theory]
    [InlineData(1, 4)]
    [InlineData(2, 8)]
    [InlineData(3, 16)]
    public void Step_replay_never_beats_the_Belady_bound(int seed, int capacity)
    {
        var rng = new Random(seed);
        var steps = Enumerable.Range(0, 200).Select(s => new StepUses(s, Enumerable.Range(0, 4).Select(_ =>
            Enumerable.Range(0, 8).Where(_ => rng.NextDouble() < 0.45).ToArray()).ToArray())).ToList();
        var uses = steps.SelectMany(s => s.ExpertsByLayer.SelectMany((es, l) => es.Select(e => new ExpertId(l, e)))).ToList();
        long minLoads = BeladyBound.MinimumLoads(uses, capacity);
        foreach (var (policy, vis, depth) in new[] { ("lru", PlanVisibility.None, 0), ("lfu", PlanVisibility.None, 0),
                     ("lookahead", PlanVisibility.WholeStep, 0), ("lookahead", PlanVisibility.WholeStep, 4), ("lookahead", PlanVisibility.None, 0) })
        {
            var stats = ResidencySimulator.ReplaySteps(steps, 4, capacity, policy, vis, depth);
            Assert.Equal(uses.Count, stats.Uses);
            Assert.True(stats.Loads >= minLoads, $"{policy}/{vis}/{depth}: {stats.Loads} loads < Belady's {minLoads}");
        }
    }

    [Fact]
    public void The_activation_aware_baseline_expects_what_a_requests_history_used_and_never_beats_Belady()
    {
        var plan = new ActivationAwarePlan(numLayers: 2, numExperts: 8);
        for (int t = 0; t < 5; t++)
        {
            plan.Record("a", 0, [3]);
            plan.Record("a", 1, [6]);
        }
        plan.BeginStep(9, ["a"]);
        long now = plan.At(0);
        Assert.Equal(new ExpertId(0, 3), plan.Upcoming(now, 1).Single().Expert);
        Assert.True(plan.NextUse(new ExpertId(1, 6), now) < long.MaxValue);
        Assert.Equal(long.MaxValue, plan.NextUse(new ExpertId(1, 5), now));

        var rng = new Random(5);
        var trace = new RoutingTrace("test", 2, 8);
        for (int s = 0; s < 100; s++)
        {
            var rows = Enumerable.Range(0, 4).Select(r => new[] { (r * 2 + rng.Next(3)) % 8 }).ToArray();
            trace.Append(new TraceStep(s, Enumerable.Range(0, 4).Select(r => new TraceSegment($"seq{r}", 1, false)).ToArray(),
                [rows, rows.Select(x => new[] { (x[0] + 1) % 8 }).ToArray()]));
        }
        long min = BeladyBound.MinimumLoads(trace.ExpertUses(), 4);
        var stats = ResidencySimulator.ReplayActivationAware(trace, 4, prefetchDepth: 2);
        Assert.Equal(trace.ExpertUses().Count, stats.Uses);
        Assert.True(stats.Loads >= min);
    }
}
