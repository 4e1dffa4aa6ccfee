using Xunit.Abstractions;
using MoeServer.Actors.Scheduling.Core;
using MoeServer.Kernels.Generation;

namespace MoeServer.Actors.Tests.Scheduling;

/// <summary>Random workloads on a small pool (preemption, shared prefixes, follow-up turns, pauses, cancels in and out of
/// steps): the bookkeeping holds after every call, every request ends exactly once, every block comes back, and every
/// request that ran to its end produced exactly its greedy tokens.</summary>
public class SchedulerCorePropertyTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    [InlineData(6)]
    [InlineData(7)]
    [InlineData(8)]
    public void Random_workloads_keep_the_pool_consistent_and_greedy_tokens_exact(int seed)
    {
        var rng = new Random(seed);
        var options = new SchedulerCoreOptions
        {
            MaxRunningSequences = 6,
            MaxBatchTokens = 24,
            PrefillChunk = 10,
            MaxDecodeBatch = rng.Next(2) == 0 ? 0 : 3,
            Batching = rng.Next(2) == 0 ? Actors.Scheduling.BatchingPolicy.Fcfs : Actors.Scheduling.BatchingPolicy.ExpertAware,
            MaxContextTokens = 512,
        };
        var h = new CoreHarness(options, blocks: 24, blockSize: 4);
        var prefixes = Enumerable.Range(0, 3).Select(i => CoreHarness.Prompt(12, seed * 10 + i)).ToArray();
        var cancelled = new HashSet<string>();
        int submitted = 0;
        const int requests = 40;
        for (int iter = 0; iter < 20_000; iter++)
        {
            if (submitted < requests && rng.Next(3) == 0)
            {
                string id = $"r{submitted++}";
                int[] prompt;
                var done = h.Events.OfType<RequestFinished>().Where(f => f.Reason == FinishReason.Stop).ToList();
                if (done.Count > 0 && rng.Next(4) == 0)
                {
                    var prev = done[rng.Next(done.Count)].RequestId; // a follow-up turn
                    prompt = [.. h.Prompts[prev], .. h.Produced[prev], .. CoreHarness.Prompt(rng.Next(1, 6), rng.Next())];
                    if (prompt.Length > 60) prompt = prompt[..60];
                }
                else prompt = [.. prefixes[rng.Next(3)].Take(rng.Next(0, 13)), .. CoreHarness.Prompt(rng.Next(1, 12), rng.Next())];
                h.Submit(id, prompt, reply: rng.Next(1, 30));
            }
            if (rng.Next(10) == 0 && Pick(h, rng) is { } p) h.Core.Pause(p);
            if (rng.Next(4) == 0) foreach (var id in h.Prompts.Keys.Where(k => h.Core.StateOf(k) is not null)) h.Core.Resume(id);
            if (rng.Next(40) == 0 && Pick(h, rng) is { } c)
            {
                cancelled.Add(c);
                h.Record(h.Core.Cancel(c));
            }
            var step = h.Plan();
            if (step is null)
            {
                if (h.Core.IsIdle && submitted == requests) break;
                foreach (var id in h.Prompts.Keys) h.Core.Resume(id);
                continue;
            }
            if (rng.Next(30) == 0)
            {
                var victim = step.Segments[rng.Next(step.Segments.Length)].RequestId;
                cancelled.Add(victim);
                Assert.Empty(h.Core.Cancel(victim));
            }
            h.Complete(step);
        }
        Assert.True(h.Core.IsIdle, $"still busy: {h.Core.Stats}");
        output.WriteLine($"{h.Steps.Count} steps, {h.Model.TokensWritten} tokens written, {cancelled.Count} cancelled; {h.Core.Stats}");
        Assert.True(h.Steps.Count > 100, "the workload ran");
        h.Pool.CheckInvariants();
        Assert.Equal(0, h.Pool.UsedBlocks);
        Assert.Equal(h.Pool.TotalBlocks, h.Pool.AvailableBlocks);
        var finished = h.Events.OfType<RequestFinished>().GroupBy(f => f.RequestId).ToDictionary(g => g.Key, g => g.Single());
        Assert.Equal(requests, finished.Count);
        foreach (var (id, f) in finished)
        {
            var reference = PagedTokenModel.Reference(h.Prompts[id], h.ReplyLength[id]);
            if (f.Reason == FinishReason.Stop) Assert.Equal(reference, h.Produced[id]);
            else
            {
                Assert.Equal(FinishReason.Cancelled, f.Reason);
                Assert.Contains(id, cancelled);
                Assert.Equal(reference.Take(h.Produced[id].Count), h.Produced[id]);
            }
        }
        Assert.True(h.Core.Stats.Preemptions > 0, "a small pool under load preempts");
        Assert.True(h.Core.Stats.PrefixHitTokens > 0, "shared prefixes and follow-up turns hit the cache");
    }

    private static string? Pick(CoreHarness h, Random rng)
    {
        var live = h.Prompts.Keys.Where(k => h.Core.StateOf(k) is not null).ToList();
        return live.Count == 0 ? null : live[rng.Next(live.Count)];
    }
}
