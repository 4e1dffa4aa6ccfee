using MoeServer.Actors.Scheduling;

namespace MoeServer.Actors.Tests;

/// <summary>The choice of decode rows when more sequences are ready than a step takes.</summary>
public class DecodeBatchingTests
{
    /// <summary>Runs <paramref name="steps"/> steps over sequences whose next experts <paramref name="expertsOf"/>
    /// gives (sequence, step, step it last ran); returns each sequence's longest wait and the distinct experts of every step.</summary>
    private static (long[] LongestWait, List<int> DistinctPerStep) Run(int sequences, int capacity, int steps, BatchingPolicy policy,
        int maxWait, Func<int, long, long, int[][]> expertsOf)
    {
        var last = new long[sequences];
        var longest = new long[sequences];
        var distinct = new List<int>();
        for (long step = 1; step <= steps; step++)
        {
            var candidates = Enumerable.Range(0, sequences).Select(i => new DecodeCandidate(last[i], expertsOf(i, step, last[i]))).ToList();
            var picked = DecodeBatching.Select(candidates, capacity, step, policy, maxWait);
            Assert.Equal(Math.Min(capacity, sequences), picked.Length);
            Assert.Equal(picked.Length, picked.Distinct().Count());
            distinct.Add(picked.SelectMany(i => DecodeBatching.ExpertsOf(candidates[i])).Distinct().Count());
            foreach (int i in picked)
            {
                longest[i] = Math.Max(longest[i], step - last[i]);
                last[i] = step;
            }
        }
        for (int i = 0; i < sequences; i++) longest[i] = Math.Max(longest[i], steps + 1 - last[i]);
        return (longest, distinct);
    }

    [Fact]
    public void A_sequence_no_one_shares_experts_with_still_runs_within_the_wait_bound()
    {
        // Eleven sequences always need experts 0 and 1 of every layer; one needs expert 7: the cheapest batch never has it.
        int[][] Popular(int i, long s) => [[0, 1], [0, 1]];
        int[][] Loner(int i, long s) => [[7], [7]];
        var (longest, _) = Run(12, 4, 200, BatchingPolicy.ExpertAware, maxWait: 5, (i, s, _) => i == 11 ? Loner(i, s) : Popular(i, s));
        Assert.All(longest, w => Assert.InRange(w, 1, 5));
    }

    [Fact]
    public void Under_adversarial_expert_churn_no_ready_sequence_waits_longer_than_the_bound()
    {
        // Each step the adversary gives the sequences that ran last step the rarest experts, so they look expensive.
        var rng = new Random(3);
        var (longest, _) = Run(20, 5, 300, BatchingPolicy.ExpertAware, maxWait: 6, (i, s, last) =>
            last == s - 1 ? [[rng.Next(4, 8)], [rng.Next(4, 8)]] : [[rng.Next(0, 2)], [rng.Next(0, 2)]]);
        Assert.All(longest, w => Assert.InRange(w, 1, 6));
    }

    [Fact]
    public void Fcfs_is_round_robin_over_the_ready_sequences()
    {
        var (longest, _) = Run(12, 4, 60, BatchingPolicy.Fcfs, maxWait: 1, (i, s, _) => [[i % 8]]);
        Assert.All(longest, w => Assert.Equal(3, w));
    }

    [Fact]
    public void Expert_aware_batches_need_fewer_distinct_experts_than_fcfs_at_equal_batch_size()
    {
        // 64 sequences, top-2 of 8 experts drawn afresh every step, the same pair on all 4 layers (a decoupled router).
        int[][] Draw(int i, long s, long last)
        {
            var rng = new Random(HashCode.Combine(i, s));
            int a = rng.Next(8), b = (a + 1 + rng.Next(7)) % 8;
            return Enumerable.Range(0, 4).Select(_ => new[] { a, b }).ToArray();
        }
        var fcfs = Run(64, 16, 200, BatchingPolicy.Fcfs, 8, Draw).DistinctPerStep.Average();
        var aware = Run(64, 16, 200, BatchingPolicy.ExpertAware, 8, Draw).DistinctPerStep.Average();
        Assert.True(aware <= 0.8 * fcfs, $"expert-aware {aware:F1} vs fcfs {fcfs:F1} distinct experts per step");
    }

    [Fact]
    public void All_ready_sequences_run_when_they_fit()
    {
        var candidates = Enumerable.Range(0, 5).Select(i => new DecodeCandidate(0, [[i]])).ToList();
        Assert.Equal([0, 1, 2, 3, 4], DecodeBatching.Select(candidates, 8, 1, BatchingPolicy.ExpertAware, 4));
    }
}
