using MoeServer.Actors.Scheduling.Core;
using MoeServer.Kernels.Generation;
using MoeServer.Kernels.Model;
using static MoeServer.Actors.Scheduling.SchedulerProtocol;

namespace MoeServer.Actors.Tests.Scheduling;

/// <summary>Prefix sharing, pause/resume, cancel, deadlines, drain, failed steps and sliding windows in the core.</summary>
public class SchedulerCoreLifecycleTests
{
    private static SchedulerCoreOptions Options(int? window = null) => new() { MaxContextTokens = 4096, SlidingWindow = window };

    [Fact]
    public void A_prompt_that_starts_like_an_earlier_one_takes_its_full_blocks_by_reference()
    {
        var h = new CoreHarness(Options(), blocks: 64, blockSize: 16);
        var system = CoreHarness.Prompt(70, 1); // 4 full blocks + 6 tokens
        h.Submit("first", [.. system, .. CoreHarness.Prompt(10, 2)], reply: 5);
        h.Step();
        h.Submit("second", [.. system, .. CoreHarness.Prompt(10, 3)], reply: 5);
        h.Step();
        var admitted = h.Of<RequestAdmitted>("second").Single();
        Assert.Equal(64, admitted.CachedTokens);
        var first = h.Core.BlocksOf("first")!;
        var second = h.Core.BlocksOf("second")!;
        Assert.Equal(first.Take(4), second.Take(4));
        Assert.All(first.Take(4), b => Assert.Equal(2, h.Pool.RefCount(b)));
        Assert.Equal(4, h.Pool.SharedBlocks);
        Assert.Equal(64, h.Steps[^1].Segments.Single(s => s.RequestId == "second").StartPosition);
        h.RunUntilIdle();
        Assert.Equal(64, h.FinishedOf("second").CachedPromptTokens);
        foreach (var id in new[] { "first", "second" }) Assert.Equal(PagedTokenModel.Reference(h.Prompts[id], 5), h.Produced[id]);
        Assert.True(h.Core.Stats.Blocks.Cached >= 5, "finished requests' full blocks stay as cache");
    }

    [Fact]
    public void A_fully_cached_prompt_still_runs_its_last_token_for_the_first_logits()
    {
        var h = new CoreHarness(Options(), blocks: 64, blockSize: 16);
        var prompt = CoreHarness.Prompt(32, 1);
        h.Submit("a", prompt, reply: 3);
        h.RunUntilIdle();
        h.Submit("b", prompt, reply: 3);
        h.Step();
        Assert.Equal(16, h.Of<RequestAdmitted>("b").Single().CachedTokens); // the second block holds the last prompt token
        h.RunUntilIdle();
        Assert.Equal(h.Produced["a"], h.Produced["b"]);
    }

    [Fact]
    public void A_multi_turn_chat_reuses_the_previous_turns_prompt_and_reply()
    {
        var h = new CoreHarness(Options(), blocks: 64, blockSize: 8);
        var turn1 = CoreHarness.Prompt(30, 1);
        h.Submit("turn1", turn1, reply: 20);
        h.RunUntilIdle();
        // The template renders turn 1's prompt and reply again, then the new user message.
        int[] turn2 = [.. turn1, .. h.Produced["turn1"], .. CoreHarness.Prompt(12, 2)];
        h.Submit("turn2", turn2, reply: 6);
        h.RunUntilIdle();
        // Turn 1 computed positions 0..48 (its last token was never run): 6 full blocks of 8.
        Assert.Equal(48, h.FinishedOf("turn2").CachedPromptTokens);
        Assert.Equal(PagedTokenModel.Reference(turn2, 6), h.Produced["turn2"]);
        Assert.True(h.Core.Stats.PrefixHitTokens >= 48);
    }

    [Fact]
    public void Another_routing_override_never_shares_blocks()
    {
        var h = new CoreHarness(Options(), blocks: 64, blockSize: 8);
        var prompt = CoreHarness.Prompt(40, 1);
        h.Submit("plain", prompt, reply: 2);
        h.RunUntilIdle();
        h.Submit("top1", prompt, reply: 2, routing: new RoutingOverride(TopKExperts: 1));
        h.Submit("disabled", prompt, reply: 2, routing: new RoutingOverride(DisabledExperts: new HashSet<(int, int)> { (0, 1) }));
        h.RunUntilIdle();
        Assert.Equal(0, h.FinishedOf("top1").CachedPromptTokens);
        Assert.Equal(0, h.FinishedOf("disabled").CachedPromptTokens);
        h.Submit("plain2", prompt, reply: 2);
        h.RunUntilIdle();
        Assert.Equal(32, h.FinishedOf("plain2").CachedPromptTokens);
    }

    [Fact]
    public void A_paused_sequence_gets_no_decode_rows_until_it_is_resumed()
    {
        var h = new CoreHarness(Options(), blocks: 64);
        h.Submit("a", [1, 2, 3], reply: 10);
        h.Submit("b", [4, 5, 6], reply: 10);
        h.Step();
        h.Core.Pause("a");
        for (int i = 0; i < 3; i++) Assert.Equal(["b"], h.Step()!.Segments.Select(s => s.RequestId));
        Assert.Equal(1, h.Core.Stats.Paused);
        h.Core.Resume("a");
        Assert.Equal(["a", "b"], h.Step()!.Segments.Select(s => s.RequestId));
        h.RunUntilIdle();
        Assert.Equal(PagedTokenModel.Reference(h.Prompts["a"], 10), h.Produced["a"]);
    }

    [Fact]
    public void Cancel_outside_a_step_ends_the_request_at_once_and_frees_its_blocks()
    {
        var h = new CoreHarness(Options(), blocks: 64);
        h.Submit("a", CoreHarness.Prompt(10, 1), reply: 50);
        h.Submit("other", [1], reply: 10);
        h.Step();
        Assert.True(h.Pool.UsedBlocks > 0);
        var ev = h.Record(h.Core.Cancel("a"));
        var f = Assert.IsType<RequestFinished>(Assert.Single(ev));
        Assert.Equal((FinishReason.Cancelled, 1), (f.Reason, f.GeneratedTokens));
        Assert.Null(h.Core.StateOf("a"));
        Assert.Empty(h.Core.Cancel("a"));
        h.Record(h.Core.Cancel("other"));
        Assert.Equal(0, h.Pool.UsedBlocks);
        Assert.True(h.Core.IsIdle);
    }

    [Fact]
    public void Cancel_during_a_step_keeps_the_blocks_being_written_until_the_step_ends()
    {
        var h = new CoreHarness(Options(), blocks: 64);
        h.Submit("a", CoreHarness.Prompt(10, 1), reply: 50);
        h.Submit("b", CoreHarness.Prompt(10, 2), reply: 3);
        h.Step();
        var step = h.Plan()!;
        Assert.True(h.Core.StepInFlight);
        var held = h.Core.BlocksOf("a")!;
        Assert.Empty(h.Core.Cancel("a"));
        Assert.All(held, b => Assert.Equal(1, h.Pool.RefCount(b)));
        Assert.Throws<InvalidOperationException>(() => h.Core.Schedule());
        var ev = h.Complete(step);
        Assert.Empty(ev.OfType<TokenProduced>().Where(t => t.RequestId == "a"));
        Assert.Equal(FinishReason.Cancelled, Assert.Single(ev.OfType<RequestFinished>()).Reason);
        Assert.All(held, b => Assert.Equal(0, h.Pool.RefCount(b)));
        h.RunUntilIdle();
        Assert.Equal(PagedTokenModel.Reference(h.Prompts["b"], 3), h.Produced["b"]);
    }

    [Fact]
    public void Deadlines_on_the_injected_clock_end_waiting_and_running_requests()
    {
        var h = new CoreHarness(Options() with { MaxRunningSequences = 1 }, blocks: 64);
        var t0 = h.Clock.Now;
        h.Submit("running", [1, 2, 3], reply: 100, deadline: t0.AddSeconds(10));
        h.Submit("waiting", [4, 5, 6], reply: 100, deadline: t0.AddSeconds(5));
        h.Submit("free", [7, 8, 9], reply: 2);
        h.Step();
        h.Clock.Advance(TimeSpan.FromSeconds(6));
        h.Step();
        var w = h.FinishedOf("waiting");
        Assert.Equal((FinishReason.Error, 0), (w.Reason, w.GeneratedTokens));
        Assert.Contains("deadline", w.Error);
        Assert.Equal("decoding", h.Core.StateOf("running"));

        // Inside a step: the step's token is not delivered, the request ends when the output arrives.
        var step = h.Plan()!;
        h.Clock.Advance(TimeSpan.FromSeconds(5));
        Assert.Empty(h.Core.ExpireDeadlines());
        var ev = h.Complete(step);
        Assert.Equal(FinishReason.Error, Assert.Single(ev.OfType<RequestFinished>()).Reason);
        h.RunUntilIdle();
        Assert.Equal(FinishReason.Stop, h.FinishedOf("free").Reason);
    }

    [Fact]
    public void Drain_refuses_new_requests_and_reports_drained_once_the_last_one_ends()
    {
        var h = new CoreHarness(Options(), blocks: 64);
        h.Submit("a", [1, 2, 3], reply: 3);
        Assert.Empty(h.Record(h.Core.Drain()));
        var r = Assert.IsType<RequestRejected>(Assert.Single(h.Submit("late", [1], reply: 1)));
        Assert.Equal(RejectionKind.Draining, r.Kind);
        h.RunUntilIdle();
        Assert.Single(h.Events.OfType<SchedulerDrained>());
        Assert.IsType<RequestFinished>(h.Events[^2]);

        var idle = new CoreHarness(Options(), blocks: 4);
        Assert.IsType<SchedulerDrained>(Assert.Single(idle.Core.Drain()));
    }

    [Fact]
    public void A_failed_step_ends_its_requests_with_the_error_and_frees_their_blocks()
    {
        var h = new CoreHarness(Options(), blocks: 64);
        h.Submit("a", [1, 2, 3], reply: 3);
        h.Submit("b", [4, 5, 6], reply: 3);
        var step = h.Plan()!;
        var ev = h.Record(h.Core.Update(StepOutput.Failed(step.StepId, "expert 3.1 is unavailable")));
        Assert.Equal(2, ev.OfType<RequestFinished>().Count(f => f.Reason == FinishReason.Error && f.Error == "expert 3.1 is unavailable"));
        Assert.Equal(0, h.Pool.UsedBlocks);
        Assert.Null(h.Plan());
    }

    [Fact]
    public void Blocks_wholly_outside_a_sliding_window_are_freed_and_the_window_still_reads_right()
    {
        const int window = 32;
        var h = new CoreHarness(Options(window), blocks: 64, blockSize: 8);
        h.Submit("a", CoreHarness.Prompt(20, 1), reply: 150);
        int most = 0;
        while (!h.Core.IsIdle)
        {
            h.Step();
            most = Math.Max(most, h.Core.BlocksOf("a")?.Count ?? 0);
        }
        Assert.True(most <= window / 8 + 1, $"held up to {most} blocks");
        Assert.Equal(PagedTokenModel.Reference(h.Prompts["a"], 150, window), h.Produced["a"]);
        Assert.Equal(0, h.Pool.UsedBlocks);
    }

    [Fact]
    public void A_long_prompt_under_a_sliding_window_gives_blocks_back_while_it_is_prefilled()
    {
        const int window = 32;
        var h = new CoreHarness(Options(window) with { PrefillChunk = 16, MaxBatchTokens = 16 }, blocks: 64, blockSize: 8);
        h.Submit("a", CoreHarness.Prompt(300, 2), reply: 5);
        int most = 0;
        while (h.Plan() is { } step)
        {
            most = Math.Max(most, h.Core.BlocksOf("a")!.Count); // at its peak: the window behind plus this chunk
            h.Complete(step);
        }
        Assert.True(most <= 7, $"held up to {most} blocks of a 300-token prompt (38 without the window)");
        Assert.Equal(PagedTokenModel.Reference(h.Prompts["a"], 5, window), h.Produced["a"]);
    }
}
