using MoeServer.Kernels.Model;
using MoeServer.Kernels.Residency;

namespace MoeServer.Kernels.Tests.Residency;

/// <summary>Expert residency policies on synthetic traces, against Belady's MIN computed independently.</summary>
public sealed class ResidencyPolicyTests
{
    private static ExpertId E(int i) => new(i / 8, i % 8);

    private static ExpertId[] Uses(params int[] ids) => ids.Select(E).ToArray();

    /// <summary>Skewed routing with runs (a token often keeps its expert), over 4 layers x 8 experts.</summary>
    private static ExpertId[] SkewedTrace(int seed, int length)
    {
        var rng = new Random(seed);
        var trace = new ExpertId[length];
        int current = 0;
        for (int i = 0; i < length; i++)
        {
            int layer = i % 4;
            if (layer == 0 && rng.NextDouble() > 0.4) current = (int)Math.Min(7, Math.Floor(-Math.Log(1 - rng.NextDouble()) * 2.5));
            trace[i] = new ExpertId(layer, (current + (rng.NextDouble() < 0.15 ? rng.Next(8) : 0)) % 8);
        }
        return trace;
    }

    public static TheoryData<int, int> Traces => new() { { 1, 2 }, { 2, 4 }, { 3, 8 }, { 4, 12 }, { 5, 16 }, { 6, 24 } };

    [Theory]
    [MemberData(nameof(Traces))]
    public void No_policy_loads_fewer_experts_than_the_Belady_bound(int seed, int capacity)
    {
        var trace = SkewedTrace(seed, 4000);
        long bound = BeladyBound.MinimumLoads(trace, capacity);
        var policies = new (string Name, ResidencyPolicy Policy, int Prefetch)[]
        {
            ("lru", new LruPolicy(), 0),
            ("lfu", new LfuPolicy(), 0),
            ("lookahead, 4 uses visible", new LookaheadPolicy(new SequencePlan(trace, visible: 4)), 0),
            ("lookahead, 16 visible, prefetch 4", new LookaheadPolicy(new SequencePlan(trace, visible: 16)), 4),
            ("lookahead, full plan, prefetch 8", new LookaheadPolicy(new SequencePlan(trace)), 8),
        };
        foreach (var (name, policy, prefetch) in policies)
        {
            var stats = ResidencySimulator.Replay(trace, capacity, policy, prefetch);
            Assert.True(stats.Loads >= bound, $"{name}: {stats.Loads} loads, below the bound {bound}");
            Assert.Equal(trace.Length, stats.Uses);
        }
    }

    [Theory]
    [MemberData(nameof(Traces))]
    public void Lookahead_with_an_exact_full_plan_is_the_Belady_bound(int seed, int capacity)
    {
        var trace = SkewedTrace(seed, 4000);
        var stats = ResidencySimulator.Replay(trace, capacity, new LookaheadPolicy(new SequencePlan(trace)));
        Assert.Equal(BeladyBound.MinimumLoads(trace, capacity), stats.Loads);
        Assert.Equal(stats.Misses, stats.DemandLoads);
    }

    [Fact]
    public void A_longer_lookahead_never_loads_more_on_a_skewed_trace()
    {
        var trace = SkewedTrace(7, 4000);
        var lru = ResidencySimulator.Replay(trace, 8, new LruPolicy());
        var near = ResidencySimulator.Replay(trace, 8, new LookaheadPolicy(new SequencePlan(trace, visible: 8)));
        var far = ResidencySimulator.Replay(trace, 8, new LookaheadPolicy(new SequencePlan(trace, visible: 64)));
        Assert.True(near.Loads < lru.Loads, $"lookahead over 8 uses {near.Loads} loads, lru {lru.Loads}");
        Assert.True(far.Loads <= near.Loads, $"over 64 uses {far.Loads} loads, over 8 {near.Loads}");
    }

    [Fact]
    public void Lru_lfu_and_Belady_on_a_hand_checked_sequence()
    {
        // capacity 2: A A A B C B C B C. LRU keeps the B/C pair after A ages out: A, B, C loaded once each.
        // LFU keeps A (3 uses) and swaps B and C on every use. Belady evicts A (never used again): 3 loads.
        var trace = Uses(0, 0, 0, 1, 2, 1, 2, 1, 2);
        Assert.Equal(3, ResidencySimulator.Replay(trace, 2, new LruPolicy()).Loads);
        Assert.Equal(7, ResidencySimulator.Replay(trace, 2, new LfuPolicy()).Loads);
        Assert.Equal(3, BeladyBound.MinimumLoads(trace, 2));
        // capacity 2: A B C A B C. LRU always evicts the next one needed (6 loads); Belady keeps one of them (4).
        var cyclic = Uses(0, 1, 2, 0, 1, 2);
        Assert.Equal(6, ResidencySimulator.Replay(cyclic, 2, new LruPolicy()).Loads);
        Assert.Equal(4, BeladyBound.MinimumLoads(cyclic, 2));
        Assert.Equal(4, ResidencySimulator.Replay(cyclic, 2, new LookaheadPolicy(new SequencePlan(cyclic))).Loads);
    }

    [Fact]
    public void Prefetch_turns_planned_misses_into_hits_without_extra_loads()
    {
        var trace = Enumerable.Range(0, 200).Select(i => E(i % 6)).ToArray(); // 6 experts, room for 8
        var demand = ResidencySimulator.Replay(trace, 8, new LookaheadPolicy(new SequencePlan(trace)));
        var ahead = ResidencySimulator.Replay(trace, 8, new LookaheadPolicy(new SequencePlan(trace)), prefetchDepth: 2);
        Assert.Equal(6, demand.Loads);
        Assert.Equal(6, ahead.Loads);
        Assert.Equal(194, demand.Hits);
        Assert.Equal(199, ahead.Hits); // only the very first use waits
        Assert.Equal(5, ahead.PrefetchHits);
        Assert.Equal(0, ahead.WastedPrefetches);
    }

    [Fact]
    public void Policies_without_a_plan_never_prefetch()
    {
        var trace = SkewedTrace(8, 500);
        var cache = new ExpertCache(4, new LruPolicy());
        foreach (var (e, t) in trace.Select((e, t) => (e, (long)t)))
        {
            cache.Use(e, t);
            var next = E((int)(t * 7 % 32));
            if (!cache.IsResident(next) && cache.Resident.Count == cache.Capacity)
                Assert.False(cache.Prefetch(next, t).Load);
        }
        Assert.Equal(0, cache.Stats().PrefetchLoads);
    }

    [Fact]
    public void Pinned_experts_stay_and_a_cache_full_of_pins_says_so()
    {
        var cache = new ExpertCache(2, new LruPolicy());
        cache.Use(E(0), 0);
        cache.Pin(E(0));
        cache.Use(E(1), 1);
        cache.Use(E(2), 2); // LRU would pick E0, but it is pinned
        Assert.True(cache.IsResident(E(0)));
        Assert.False(cache.IsResident(E(1)));
        Assert.False(cache.Evict(E(0), force: false));
        cache.Pin(E(2));
        var full = Assert.Throws<InvalidOperationException>(() => cache.Use(E(3), 3));
        Assert.Contains("pinned", full.Message, StringComparison.Ordinal);
        Assert.Equal(3, cache.Stats().Uses); // the refused use is not counted
        Assert.True(cache.Evict(E(0), force: true));
        Assert.Equal((true, (ExpertId?)null), cache.Use(E(3), 4));
    }

    [Fact]
    public void Policies_are_created_by_their_configuration_names()
    {
        Assert.IsType<LruPolicy>(ResidencyPolicy.Create("lru"));
        Assert.IsType<LfuPolicy>(ResidencyPolicy.Create(" LFU "));
        Assert.IsType<LookaheadPolicy>(ResidencyPolicy.Create("lookahead", new SequencePlan(Uses(0))));
        Assert.Contains("needs a plan", Assert.Throws<ArgumentException>(() => ResidencyPolicy.Create("lookahead")).Message, StringComparison.Ordinal);
        Assert.Contains("lru, lfu or lookahead", Assert.Throws<ArgumentException>(() => ResidencyPolicy.Create("fifo")).Message, StringComparison.Ordinal);
    }
}
