using System.Diagnostics;
using Akka.Actor;
using MoeServer.Actors.Generation;
using MoeServer.Actors.Hosting;
using MoeServer.Actors.Scheduling;
using MoeServer.Actors.Tests.Support;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Generation;
using MoeServer.Kernels.Model;
using MoeServer.Kernels.Sampling;
using MoeServer.Kernels.Tests.Support;

namespace MoeServer.Actors.Tests;

/// <summary>The engine's contract with the gateway on one node: cancellation, overload, KV budget, deadlines,
/// backpressure, validation, stop strings and eos.</summary>
public class EngineBehaviourTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);

    private static string Model => TinyCheckpoints.Get(ModelArchitecture.Mixtral);

    private static async Task<TestNode> StartAsync(string? extra = null)
    {
        var node = await TestNode.StartAsync(Model, NodeRole.All, extra: extra);
        await node.WaitReadyAsync();
        return node;
    }

    private static GenerationRequest Greedy(string id, int promptLength, int maxTokens, int seed = 1) =>
        new(id, GreedyWorkload.Prompt(promptLength, seed, 512), SamplingParams.Greedy with { MaxTokens = maxTokens });

    /// <summary>Reads a stream to its end, calling <paramref name="afterChunk"/> with the number of chunks read so far.</summary>
    private static async Task<(List<int> Ids, TokenChunk Final)> ReadAsync(GenerationStream stream, Action<int>? afterChunk = null)
    {
        using var timeout = new CancellationTokenSource(Patience);
        var ids = new List<int>();
        TokenChunk? final = null;
        int n = 0;
        await foreach (var c in stream.WithCancellation(timeout.Token))
        {
            if (c.TokenId >= 0) ids.Add(c.TokenId);
            final = c;
            afterChunk?.Invoke(++n);
        }
        Assert.True(final is { IsFinal: true }, $"stream {stream.RequestId} ended without a final chunk");
        return (ids, final!);
    }

    /// <summary>Polls the scheduler until <paramref name="condition"/> holds.</summary>
    private static async Task<EngineStats> WaitForStatsAsync(MoeEngine engine, Func<EngineStats, bool> condition, string what)
    {
        var deadline = Stopwatch.StartNew();
        while (true)
        {
            var stats = await engine.GetStatsAsync();
            if (condition(stats)) return stats;
            if (deadline.Elapsed > Patience) Assert.Fail($"timed out waiting for {what}; last stats: {stats}");
            await Task.Delay(10);
        }
    }

    private static void AssertIdle(EngineStats s)
    {
        Assert.Equal(0, s.Running);
        Assert.Equal(0, s.Waiting);
        Assert.Equal(0, s.Paused);
        Assert.Equal(0, s.KvBytesReserved);
        Assert.Equal(0, s.KvBytesAllocated);
    }

    [Fact]
    public async Task Cancelled_requests_end_with_finish_reason_cancelled_and_free_their_resources()
    {
        await using var node = await StartAsync();
        var engine = node.Engine;
        using var clientGone = new CancellationTokenSource();
        // Two requests that would run for thousands of tokens, and two ordinary ones beside them.
        var byToken = await engine.SubmitAsync(Greedy("by-token", 6, 4000, seed: 1), clientGone.Token);
        var byStream = await engine.SubmitAsync(Greedy("by-stream", 9, 4000, seed: 2));
        var normal1 = await engine.SubmitAsync(Greedy("normal-1", 5, 32, seed: 3));
        var normal2 = await engine.SubmitAsync(Greedy("normal-2", 20, 48, seed: 4));

        var results = await Task.WhenAll(
            ReadAsync(byToken, n =>
            {
                if (n == 3) clientGone.Cancel();
            }),
            ReadAsync(byStream, n =>
            {
                if (n == 3) byStream.Cancel();
            }),
            ReadAsync(normal1),
            ReadAsync(normal2));

        foreach (var (ids, final) in results.Take(2))
        {
            Assert.Equal(FinishReason.Cancelled, final.FinishReason);
            Assert.Null(final.Error);
            Assert.InRange(final.Usage!.CompletionTokens, 3, 3999);
            Assert.Equal(ids.Count, final.Usage.CompletionTokens);
        }
        Assert.Equal(FinishReason.Length, results[2].Final.FinishReason);
        Assert.Equal(32, results[2].Ids.Count);
        Assert.Equal(FinishReason.Length, results[3].Final.FinishReason);
        Assert.Equal(48, results[3].Ids.Count);

        var stats = await engine.GetStatsAsync();
        AssertIdle(stats);
        Assert.Equal(4, stats.CompletedRequests);
    }

    [Fact]
    public async Task A_client_that_goes_away_without_reading_frees_its_request_and_its_actor()
    {
        await using var node = await StartAsync("moe.scheduler.stream-buffer-chunks = 2");
        var engine = node.Engine;
        using var clientGone = new CancellationTokenSource();
        var byToken = await engine.SubmitAsync(Greedy("gone-token", 6, 4000, seed: 1), clientGone.Token);
        var byStream = await engine.SubmitAsync(Greedy("gone-stream", 6, 4000, seed: 2));
        // Neither stream is read: both fill their buffers and pause.
        await WaitForStatsAsync(engine, s => s.Paused == 2, "both unread requests to be paused");
        clientGone.Cancel();
        await byStream.DisposeAsync();

        AssertIdle(await WaitForStatsAsync(engine, s => s.Running == 0, "both requests to end"));
        foreach (var stream in new[] { byToken, byStream })
        {
            var ended = await stream.Actor!.WatchAsync().WaitAsync(TimeSpan.FromSeconds(10));
            Assert.True(ended, $"the generation actor of {stream.RequestId} is still alive");
            // Should the reader come back after all, the stream still ends with its final chunk.
            var (_, final) = await ReadAsync(stream);
            Assert.Equal(FinishReason.Cancelled, final.FinishReason);
        }
    }

    [Fact]
    public async Task A_request_beyond_the_wait_queue_is_refused_at_once_while_the_admitted_ones_complete()
    {
        await using var node = await StartAsync("moe.scheduler { max-running-sequences = 1, max-queued-requests = 1 }");
        var engine = node.Engine;
        // Nobody reads the first stream yet: it stays running (paused by backpressure), so the slot stays taken.
        var first = await engine.SubmitAsync(Greedy("first", 8, 200, seed: 1));
        var second = await engine.SubmitAsync(Greedy("second", 8, 200, seed: 2));
        var stats = await engine.GetStatsAsync();
        Assert.Equal(1, stats.Running);
        Assert.Equal(1, stats.Waiting);

        var sw = Stopwatch.StartNew();
        var ex = await Assert.ThrowsAsync<EngineOverloadedException>(() => engine.SubmitAsync(Greedy("third", 8, 200, seed: 3)));
        sw.Stop();
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(1), $"refusing took {sw.Elapsed.TotalMilliseconds:F0} ms");
        Assert.Contains("queue", ex.Message);

        var results = await Task.WhenAll(ReadAsync(first), ReadAsync(second));
        foreach (var (ids, final) in results)
        {
            Assert.Equal(FinishReason.Length, final.FinishReason);
            Assert.Equal(200, ids.Count);
        }
        AssertIdle(await engine.GetStatsAsync());
    }

    [Fact]
    public async Task Kv_budget_refuses_what_can_never_fit_and_queues_what_fits_later()
    {
        var cfg = ModelConfig.Load(Model);
        long perToken = 2L * cfg.NumLayers * cfg.NumKvHeads * cfg.HeadDim * sizeof(float);
        const int prompt = 8, maxTokens = 200;
        long oneRequest = (prompt + maxTokens) * perToken;
        long budget = oneRequest * 3 / 2;
        await using var node = await StartAsync($"moe.scheduler.kv-cache-budget = {budget}b");
        var engine = node.Engine;

        // prompt + max_tokens beyond the whole budget: refused at once, naming max_tokens.
        int tooMany = (int)(budget / perToken);
        var ex = await Assert.ThrowsAsync<InvalidGenerationRequestException>(() => engine.SubmitAsync(Greedy("huge", prompt, tooMany)));
        Assert.Equal("max_tokens", ex.Field);
        Assert.Contains($"max_tokens ({tooMany})", ex.Message);
        Assert.Matches("budget of [1-9]", ex.Message);

        // Two requests that each fit, but not together: the second waits for the first.
        var a = await engine.SubmitAsync(Greedy("a", prompt, maxTokens, seed: 1));
        var b = await engine.SubmitAsync(Greedy("b", prompt, maxTokens, seed: 2));
        var stats = await engine.GetStatsAsync();
        Assert.Equal(1, stats.Running);
        Assert.Equal(1, stats.Waiting);
        Assert.Equal(oneRequest, stats.KvBytesReserved);
        Assert.True(stats.KvBytesReserved + oneRequest > stats.KvBytesBudget);

        var (idsA, finalA) = await ReadAsync(a);
        var (idsB, finalB) = await ReadAsync(b);
        Assert.Equal(FinishReason.Length, finalA.FinishReason);
        Assert.Equal(FinishReason.Length, finalB.FinishReason);
        Assert.Equal(maxTokens, idsA.Count);
        Assert.Equal(maxTokens, idsB.Count);
        AssertIdle(await engine.GetStatsAsync());
    }

    /// <summary>Leak bench finding (issue 15): a client that leaves with its buffer full hands the rest of its stream to a
    /// writer that waited for a reader forever, so moe_request_streams_open stayed at 1. It is completed after the grace.</summary>
    [Fact]
    public async Task An_abandoned_stream_with_a_full_buffer_is_completed_after_the_grace_period()
    {
        await using var node = await StartAsync();
        var engine = node.Engine;
        var stream = await engine.SubmitAsync(Greedy("abandoned", 6, 4000, seed: 3));
        await WaitForStatsAsync(engine, s => s.Paused == 1, "the unread request to be paused (buffer full)");
        stream.Cancel(); // the client is gone, never to read again
        await WaitForStatsAsync(engine, s => s.Running == 0, "the cancelled request to end");
        var deadline = DateTime.UtcNow + GenerationActor.AbandonedStreamGrace + TimeSpan.FromSeconds(20);
        while (engine.Gauges.OpenStreams > 0 || engine.Gauges.GenerationActors > 0)
        {
            Assert.True(DateTime.UtcNow < deadline, $"{engine.Gauges.OpenStreams} streams still open, {engine.Gauges.GenerationActors} generation actors alive");
            await Task.Delay(200);
        }
    }

    [Fact]
    public async Task A_request_past_its_timeout_ends_with_an_error_naming_the_timeout()
    {
        await using var node = await StartAsync();
        var engine = node.Engine;
        var sw = Stopwatch.StartNew();
        // One read as it streams, one whose reader is away (paused by backpressure): both hit the deadline.
        var read = await engine.SubmitAsync(Greedy("read", 6, 4000, seed: 1) with { Timeout = TimeSpan.FromMilliseconds(200) });
        var unread = await engine.SubmitAsync(Greedy("unread", 6, 4000, seed: 2) with { Timeout = TimeSpan.FromMilliseconds(200) });
        var (ids, final) = await ReadAsync(read);
        var elapsed = sw.Elapsed;
        Assert.Equal(FinishReason.Error, final.FinishReason);
        Assert.Contains("timeout", final.Error);
        Assert.True(final.DeadlineExceeded, "the final chunk of a deadline's end must say so (the API answers 408)");
        Assert.InRange(ids.Count, 0, 3999);
        Assert.True(elapsed < TimeSpan.FromSeconds(10), $"the request ran {elapsed.TotalSeconds:F1} s");

        await WaitForStatsAsync(engine, s => s.Running == 0, "the unread request to end");
        var (_, unreadFinal) = await ReadAsync(unread);
        Assert.Equal(FinishReason.Error, unreadFinal.FinishReason);
        Assert.Contains("timeout", unreadFinal.Error);
        Assert.True(unreadFinal.DeadlineExceeded);
        AssertIdle(await engine.GetStatsAsync());
    }

    [Fact]
    public async Task A_slow_reader_pauses_its_sequence_and_then_gets_the_same_tokens()
    {
        await using var node = await StartAsync("moe.scheduler.stream-buffer-chunks = 2");
        var engine = node.Engine;
        var request = Greedy("slow", 7, 40, seed: 5);
        var slow = await engine.SubmitAsync(request);
        var paused = await WaitForStatsAsync(engine, s => s.Paused == 1, "the unread request to be paused");
        Assert.Equal(1, paused.Running);
        Assert.True(paused.GeneratedTokens < 40, $"{paused.GeneratedTokens} tokens generated for a reader that read none");
        var (slowIds, slowFinal) = await ReadAsync(slow);

        var (fastIds, fastFinal) = await ReadAsync(await engine.SubmitAsync(request with { RequestId = "fast" }));
        Assert.Equal(FinishReason.Length, slowFinal.FinishReason);
        Assert.Equal(FinishReason.Length, fastFinal.FinishReason);
        Assert.Equal(40, slowIds.Count);
        Assert.Equal(fastIds, slowIds);

        using var model = MoeModel.Load(Model, WeightPrecision.F32);
        var (want, margins) = DirectGreedy.Run(model, request.PromptTokens.ToArray(), 40);
        DirectGreedy.AssertSameGreedy(want, margins, slowIds, "paused request");
        AssertIdle(await engine.GetStatsAsync());
    }

    [Fact]
    public async Task Invalid_requests_are_refused_naming_the_field()
    {
        await using var node = await StartAsync();
        var engine = node.Engine;
        var cfg = engine.Config;
        var ok = Greedy("v", 4, 4);
        var allOfLayer0 = Enumerable.Range(0, cfg.NumExperts).Select(e => (0, e)).ToHashSet();
        (string Field, GenerationRequest Request)[] cases =
        [
            ("prompt", ok with { PromptTokens = [] }),
            ("prompt", ok with { PromptTokens = [5, cfg.VocabSize] }),
            ("prompt", ok with { PromptTokens = [-1] }),
            ("prompt", ok with { PromptTokens = GreedyWorkload.Prompt(cfg.MaxPositionEmbeddings, 1, cfg.VocabSize) }),
            ("top_k_experts", ok with { Routing = new RoutingOverride(TopKExperts: 0) }),
            ("top_k_experts", ok with { Routing = new RoutingOverride(TopKExperts: cfg.NumExperts + 1) }),
            ("disabled_experts", ok with { Routing = new RoutingOverride(DisabledExperts: new HashSet<(int, int)> { (0, cfg.NumExperts) }) }),
            ("disabled_experts", ok with { Routing = new RoutingOverride(DisabledExperts: new HashSet<(int, int)> { (0, -1) }) }),
            ("disabled_experts", ok with { Routing = new RoutingOverride(DisabledExperts: new HashSet<(int, int)> { (cfg.NumLayers, 0) }) }),
            ("disabled_experts", ok with { Routing = new RoutingOverride(DisabledExperts: allOfLayer0) }),
        ];
        foreach (var (field, request) in cases)
        {
            var sw = Stopwatch.StartNew();
            var ex = await Assert.ThrowsAsync<InvalidGenerationRequestException>(() => engine.SubmitAsync(request));
            Assert.True(field == ex.Field, $"expected field {field}, got {ex.Field}: {ex.Message}");
            Assert.False(string.IsNullOrWhiteSpace(ex.Message));
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(1));
        }
        // Nothing of the refused requests stayed behind, and a valid request still runs.
        AssertIdle(await engine.GetStatsAsync());
        var (ids, final) = await ReadAsync(await engine.SubmitAsync(ok));
        Assert.Equal(FinishReason.Length, final.FinishReason);
        Assert.Equal(4, ids.Count);
    }

    [Fact]
    public async Task A_stop_string_from_the_greedy_output_ends_the_request_and_is_not_sent()
    {
        await using var node = await StartAsync();
        var engine = node.Engine;
        var request = Greedy("plain", 6, 24, seed: 9);
        var plain = await (await engine.SubmitAsync(request)).CollectAsync();
        Assert.Equal(FinishReason.Length, plain.Final.FinishReason);
        string text = plain.Text;

        // A short piece from the middle of the output, free of replacement characters.
        string? stop = null;
        for (int at = text.Length / 3; at + 2 <= text.Length * 2 / 3 && stop is null; at++)
        {
            string piece = text.Substring(at, 2);
            if (!piece.Contains('\uFFFD') && !char.IsSurrogate(piece[0]) && !char.IsSurrogate(piece[1]) && !string.IsNullOrWhiteSpace(piece)) stop = piece;
        }
        Assert.True(stop is not null, $"no usable stop string in {text}");
        int cut = text.IndexOf(stop, StringComparison.Ordinal);

        var stopped = await (await engine.SubmitAsync(request with
        {
            RequestId = "stopped",
            Sampling = request.Sampling with { StopStrings = [stop] },
        })).CollectAsync();
        Assert.Equal(FinishReason.Stop, stopped.Final.FinishReason);
        Assert.Equal(text[..cut], stopped.Text);
        Assert.DoesNotContain(stop, stopped.Text, StringComparison.Ordinal);
        Assert.True(stopped.TokenIds.Count < plain.TokenIds.Count, "the stop string did not end the generation early");
        Assert.Equal(plain.TokenIds.Take(stopped.TokenIds.Count), stopped.TokenIds);
        Assert.Equal(stopped.TokenIds.Count, stopped.Final.Usage!.CompletionTokens);

        // A stop token id from the output ends the request at that token.
        int stopToken = plain.TokenIds[10];
        int firstAt = plain.TokenIds.ToList().IndexOf(stopToken);
        var byId = await (await engine.SubmitAsync(request with
        {
            RequestId = "stop-id",
            Sampling = request.Sampling with { StopTokenIds = [stopToken] },
        })).CollectAsync();
        Assert.Equal(FinishReason.Stop, byId.Final.FinishReason);
        Assert.Equal(plain.TokenIds.Take(firstAt + 1), byId.TokenIds);
    }

    [Fact]
    public async Task Eos_ends_the_request_with_finish_reason_stop_and_no_special_token_text()
    {
        await using var node = await StartAsync();
        var engine = node.Engine;
        int eos = engine.Tokenizer.EosId ?? engine.Config.EosTokenIds[0];
        string eosText = engine.Tokenizer.IdToToken(eos)!;
        // The bias makes eos the greedy choice at the first step.
        var request = Greedy("eos", 6, 24) with
        {
            Sampling = SamplingParams.Greedy with { MaxTokens = 24, LogitBias = new Dictionary<int, float> { [eos] = 100f } },
        };
        var (text, final, ids) = await (await engine.SubmitAsync(request)).CollectAsync();
        Assert.Equal(FinishReason.Stop, final.FinishReason);
        Assert.Equal([eos], ids);
        Assert.Equal(1, final.Usage!.CompletionTokens);
        Assert.Equal("", text);
        Assert.DoesNotContain(eosText, text, StringComparison.Ordinal);
        AssertIdle(await engine.GetStatsAsync());
    }
}
