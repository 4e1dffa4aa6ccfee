using MoeServer.Actors.Scheduling;
using MoeServer.Actors.Scheduling.Core;
using MoeServer.Kernels.Generation;
using MoeServer.Kernels.Model;
using static MoeServer.Actors.Scheduling.SchedulerProtocol;

namespace MoeServer.Actors.Tests.Scheduling;

/// <summary>The scheduling core driven with a fake paged model and a fake output stage: no node, no actors.</summary>
public class SchedulerCoreTests
{
    private static SchedulerCoreOptions Options(int running = 64, int batch = 512, int chunk = 256, int queue = 256, int ctx = 4096) => new()
    {
        MaxRunningSequences = running,
        MaxBatchTokens = batch,
        PrefillChunk = chunk,
        MaxQueuedRequests = queue,
        MaxContextTokens = ctx,
    };

    [Fact]
    public void Admission_stops_at_the_running_limit_and_the_rest_wait_in_arrival_order()
    {
        var h = new CoreHarness(Options(running: 2), blocks: 64);
        for (int i = 0; i < 4; i++) Assert.IsType<RequestQueued>(Assert.Single(h.Submit($"r{i}", CoreHarness.Prompt(5, i), reply: 3)));
        h.Step();
        Assert.Equal(["r0", "r1"], h.Events.OfType<RequestAdmitted>().Select(a => a.RequestId));
        Assert.Equal("waiting", h.Core.StateOf("r2"));
        h.RunUntilIdle();
        Assert.Equal(["r0", "r1", "r2", "r3"], h.Events.OfType<RequestAdmitted>().Select(a => a.RequestId));
        Assert.Equal(2, h.MaxRunning);
        for (int i = 0; i < 4; i++) Assert.Equal(PagedTokenModel.Reference(h.Prompts[$"r{i}"], 3), h.Produced[$"r{i}"]);
        Assert.Equal(0, h.Pool.UsedBlocks);
    }

    [Fact]
    public void Every_rejection_names_its_field_and_a_clear_reason()
    {
        var h = new CoreHarness(Options(queue: 2, ctx: 64), blocks: 8, blockSize: 4); // the pool holds 32 tokens
        Assert.IsType<RequestQueued>(Assert.Single(h.Submit("a", [1, 2, 3], reply: 2)));

        var dup = Assert.IsType<RequestRejected>(Assert.Single(h.Submit("a", [1, 2, 3], reply: 2)));
        Assert.Equal(("request_id", "duplicate", RejectionKind.Invalid), (dup.Field, dup.Code, dup.Kind));

        var ctx = Assert.IsType<RequestRejected>(Assert.Single(h.Submit("long", CoreHarness.Prompt(64, 1), reply: 1)));
        Assert.Equal(("prompt", "context_length_exceeded"), (ctx.Field, ctx.Code));

        var mt = Assert.IsType<RequestRejected>(Assert.Single(h.Submit("mt", [1, 2], reply: 1, maxTokens: 63)));
        Assert.Equal(("max_tokens", "context_length_exceeded"), (mt.Field, mt.Code));

        // Could not fit in the whole pool even alone: refused at admission, never preempted forever.
        var alone = Assert.IsType<RequestRejected>(Assert.Single(h.Submit("big", [1, 2], reply: 1, maxTokens: 40)));
        Assert.Equal(("max_tokens", "kv_cache_exceeded"), (alone.Field, alone.Code));
        Assert.Contains("8 blocks", alone.Message);
        var bigPrompt = Assert.IsType<RequestRejected>(Assert.Single(h.Submit("bigp", CoreHarness.Prompt(33, 2), reply: 1)));
        Assert.Equal(("prompt", "kv_cache_exceeded"), (bigPrompt.Field, bigPrompt.Code));

        Assert.IsType<RequestQueued>(Assert.Single(h.Submit("b", [1, 2, 3], reply: 2)));
        var full = Assert.IsType<RequestRejected>(Assert.Single(h.Submit("c", [1, 2, 3], reply: 2)));
        Assert.Equal((RejectionKind.Overloaded, (string?)null), (full.Kind, full.Field));
    }

    [Fact]
    public void A_request_without_max_tokens_that_fills_the_whole_pool_alone_ends_with_length_not_an_error()
    {
        var h = new CoreHarness(Options(ctx: 1000), blocks: 4, blockSize: 4); // 16 tokens of KV
        h.Submit("a", [1, 2, 3, 4, 5, 6], reply: 100);
        h.RunUntilIdle();
        var f = h.FinishedOf("a");
        Assert.Equal(FinishReason.Length, f.Reason);
        Assert.Equal(11, f.GeneratedTokens); // positions 0..15 hold prompt + 10 generated; the 11th is never attended
        Assert.Empty(h.Events.OfType<RequestPreempted>());
        Assert.Equal(PagedTokenModel.Reference(h.Prompts["a"], 11), h.Produced["a"]);
    }

    [Fact]
    public void Long_prompts_are_prefilled_in_chunks_and_only_the_last_chunk_asks_for_logits()
    {
        var h = new CoreHarness(Options(batch: 512, chunk: 256), blocks: 64, blockSize: 16);
        h.Submit("a", CoreHarness.Prompt(600, 1), reply: 2);
        var segs = new List<ScheduledSegment>();
        while (!h.Core.IsIdle) segs.AddRange(h.Step()!.Segments);
        Assert.Equal([(0, 256, false, true), (256, 256, false, true), (512, 88, true, true), (600, 1, true, false)],
            segs.Select(s => (s.StartPosition, s.Tokens.Length, s.NeedsLogits, s.IsPrefill)));
        Assert.Equal(Enumerable.Range(256, 256), segs[1].Positions);
        Assert.Equal(PagedTokenModel.Reference(h.Prompts["a"], 2), h.Produced["a"]);
    }

    [Fact]
    public void Decode_rows_come_first_so_running_streams_keep_producing_while_a_long_prompt_prefills()
    {
        var h = new CoreHarness(Options(batch: 64, chunk: 64), blocks: 256, blockSize: 16);
        h.Submit("a", CoreHarness.Prompt(8, 1), reply: 40);
        h.Step();
        h.Submit("b", CoreHarness.Prompt(1000, 2), reply: 2);
        for (int i = 0; i < 10; i++)
        {
            var step = h.Step()!;
            Assert.Equal("a", step.Segments[0].RequestId);
            Assert.False(step.Segments[0].IsPrefill);
            Assert.Equal(("b", 63, true), (step.Segments[1].RequestId, step.Segments[1].Tokens.Length, step.Segments[1].IsPrefill));
            Assert.True(step.TotalTokens <= 64);
        }
        h.RunUntilIdle();
        Assert.Equal(PagedTokenModel.Reference(h.Prompts["a"], 40), h.Produced["a"]);
        Assert.Equal(PagedTokenModel.Reference(h.Prompts["b"], 2), h.Produced["b"]);
    }

    [Fact]
    public void With_fewer_decode_rows_than_ready_sequences_fcfs_takes_turns()
    {
        var h = new CoreHarness(Options() with { MaxDecodeBatch = 2 }, blocks: 64);
        foreach (var id in new[] { "a", "b", "c", "d" }) h.Submit(id, [1, 2, 3], reply: 50);
        h.Step(); // all four prefill
        var rows = Enumerable.Range(0, 8).Select(_ => h.Step()!.Segments.Select(s => s.RequestId).Order().ToArray()).ToList();
        foreach (var r in rows) Assert.Equal(2, r.Length);
        var counts = rows.SelectMany(r => r).GroupBy(x => x).ToDictionary(g => g.Key, g => g.Count());
        Assert.All(new[] { "a", "b", "c", "d" }, id => Assert.Equal(4, counts[id]));
    }

    [Fact]
    public void Expert_aware_batching_groups_shared_experts_but_no_sequence_waits_longer_than_max_wait_steps()
    {
        var h = new CoreHarness(Options() with { MaxDecodeBatch = 2, Batching = BatchingPolicy.ExpertAware, MaxWaitSteps = 3 }, blocks: 64);
        var experts = new Dictionary<string, int[][]>
        {
            ["a"] = [[0]], ["b"] = [[0]], ["c"] = [[0]], ["odd"] = [[7]],
        };
        foreach (var id in experts.Keys) h.Submit(id, [1, 2, 3], reply: 60);
        var lastRow = experts.Keys.ToDictionary(k => k, _ => 1L);
        int oddRows = 0, mixed = 0;
        for (int i = 0; i < 30; i++)
        {
            var step = h.Plan()!;
            foreach (var seg in step.Segments.Where(s => !s.IsPrefill))
            {
                Assert.True(step.StepId - lastRow[seg.RequestId] <= 3 + 1, $"{seg.RequestId} waited {step.StepId - lastRow[seg.RequestId]} steps");
                lastRow[seg.RequestId] = step.StepId;
                if (seg.RequestId == "odd") oddRows++;
            }
            if (step.Segments.Select(s => experts[s.RequestId][0][0]).Distinct().Count() > 1) mixed++;
            h.Complete(step, (seg, o) => o with { NextExperts = experts[seg.RequestId], NextExpertsExact = true });
        }
        Assert.InRange(oddRows, 6, 11); // a share bounded by the wait, not 1 in 2
        Assert.True(mixed < 15, $"{mixed} of 30 steps mixed experts");
        var plan = h.Steps[^1].ToPreGatePlan(1, _ => 1);
        Assert.Equal(h.Steps[^1].Segments.Count(s => !s.IsPrefill), plan.Layers[0].Values.Sum(d => d.Rows));
    }

    [Fact]
    public void Out_of_blocks_the_newest_running_sequence_is_preempted_and_resumes_with_exactly_its_greedy_tokens()
    {
        // 12 blocks of 4 tokens; three sequences of 8-token prompts growing to 8 + 12 = 20 positions (5 blocks) each.
        var h = new CoreHarness(Options(), blocks: 12, blockSize: 4);
        foreach (var id in new[] { "old", "mid", "new" }) h.Submit(id, CoreHarness.Prompt(8, id.Length + id[0]), reply: 13);
        h.RunUntilIdle();
        var preempted = h.Events.OfType<RequestPreempted>().ToList();
        Assert.NotEmpty(preempted);
        Assert.Equal("new", preempted[0].RequestId);
        Assert.DoesNotContain(preempted, p => p.RequestId == "old");
        Assert.True(h.Core.Stats.Preemptions >= 1);
        foreach (var id in new[] { "old", "mid", "new" })
        {
            Assert.Equal(PagedTokenModel.Reference(h.Prompts[id], 13), h.Produced[id]);
            Assert.Equal(FinishReason.Stop, h.FinishedOf(id).Reason);
        }
        var readmit = h.Events.OfType<RequestAdmitted>().First(a => a.RequestId == "new" && a.Readmission);
        Assert.True(readmit.CachedTokens > 0, "its own full blocks were still cached");
        Assert.Equal(0, h.Pool.UsedBlocks);
    }

    [Fact]
    public void A_paused_sequence_gives_its_blocks_up_before_any_running_one_and_resumes_exactly()
    {
        // 12 blocks of 4: three 8-token prompts growing to 24 positions (6 blocks) each cannot all stay.
        var h = new CoreHarness(Options(), blocks: 12, blockSize: 4);
        foreach (var id in new[] { "paused", "a", "b" }) h.Submit(id, CoreHarness.Prompt(8, id[0]), reply: 17);
        h.Step();
        h.Core.Pause("paused");
        Assert.Equal("paused", h.Core.StateOf("paused"));
        while (!h.Events.OfType<RequestPreempted>().Any()) Assert.DoesNotContain(h.Step()!.Segments, s => s.RequestId == "paused");
        Assert.Equal("paused", Assert.Single(h.Events.OfType<RequestPreempted>()).RequestId);
        Assert.Equal("waiting", h.Core.StateOf("paused"));
        Assert.Empty(h.Core.BlocksOf("paused")!);
        while (h.Plan() is { } step) h.Complete(step); // a and b finish; the paused one is not readmitted while paused
        Assert.Equal(FinishReason.Stop, h.FinishedOf("a").Reason);
        Assert.Equal(FinishReason.Stop, h.FinishedOf("b").Reason);
        Assert.Equal("waiting", h.Core.StateOf("paused"));
        h.Core.Resume("paused");
        h.RunUntilIdle();
        Assert.Single(h.Events.OfType<RequestPreempted>());
        foreach (var id in new[] { "paused", "a", "b" }) Assert.Equal(PagedTokenModel.Reference(h.Prompts[id], 17), h.Produced[id]);
    }
}
