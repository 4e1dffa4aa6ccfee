using System.Diagnostics;
using MoeServer.Actors.Generation;
using MoeServer.Actors.Tests.Support;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Generation;
using MoeServer.Kernels.Model;
using MoeServer.Kernels.Sampling;
using MoeServer.Kernels.Tests.Support;
using Xunit.Abstractions;

namespace MoeServer.Actors.Tests;

[Collection("cluster")]
public class CoordinatedShutdownTests(ITestOutputHelper output)
{
    private const int Requests = 8, MaxTokens = 40, StreamedBeforeStop = 3;

    /// <summary>
    /// An expert node leaves gracefully (coordinated shutdown) while 8 requests are mid-generation: its shards move to
    /// the other expert node, steps that were waiting on it are retried, and every request completes with the direct
    /// loop's tokens. Half of the readers wait for the node to be gone before reading on (their sequences sit paused
    /// across the hand-off and finish on the surviving node); the other half read on at a slow client's pace, so steps
    /// keep running while the node leaves.
    /// </summary>
    [Fact]
    public async Task Requests_complete_with_the_direct_loops_tokens_when_an_expert_node_leaves_mid_generation()
    {
        var arch = ModelArchitecture.Mixtral;
        string dir = TinyCheckpoints.Get(arch);
        var eos = GreedyWorkload.EosIds(dir);
        var prompts = Enumerable.Range(0, Requests).Select(i => GreedyWorkload.Prompt(3 + 4 * i, 500 + i, 512)).ToArray();
        (int[] Tokens, float[] Margins)[] want;
        using (var model = MoeModel.Load(dir, WeightPrecision.F32))
            want = prompts.Select(p => DirectGreedy.Run(model, p, MaxTokens, eos: eos)).ToArray();

        await using var cluster = await TestCluster.StartAsync(dir, "moe.scheduler.stream-buffer-chunks = 4");
        var before = await cluster.LocateExpertsAsync();
        // Stop the node that hosts more experts (each hosts some once both have joined and shards are balanced).
        int onFirst = before.Values.Count(n => n == cluster.Expert1.Address);
        var (victim, survivor) = onFirst >= before.Count - onFirst ? (cluster.Expert1, cluster.Expert2) : (cluster.Expert2, cluster.Expert1);
        Assert.Contains(victim.Address, before.Values);

        var streams = new GenerationStream[Requests];
        for (int i = 0; i < Requests; i++)
            streams[i] = await cluster.Engine.SubmitAsync(new GenerationRequest($"leave-{i}", prompts[i], SamplingParams.Greedy with { MaxTokens = MaxTokens }));

        using var streamed = new CountdownEvent(Requests);
        var streamedAll = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var stopped = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var tokensAfterStopStarted = new int[Requests];
        bool stopping = false;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(120));

        async Task<(List<int> Ids, TokenChunk Final)> Read(int i)
        {
            var ids = new List<int>();
            TokenChunk? final = null;
            bool signalled = false;
            void Signal()
            {
                if (signalled) return;
                signalled = true;
                if (streamed.Signal()) streamedAll.TrySetResult();
            }
            await foreach (var c in streams[i].WithCancellation(timeout.Token))
            {
                if (c.TokenId >= 0) ids.Add(c.TokenId);
                if (Volatile.Read(ref stopping)) tokensAfterStopStarted[i]++;
                final = c;
                if (c.IsFinal) break;
                if (ids.Count == StreamedBeforeStop)
                {
                    Signal();
                    if (i % 2 == 0) await stopped.Task.WaitAsync(timeout.Token);
                }
                // A slow client while the node leaves: steps keep running through the hand-off.
                if (i % 2 == 1 && ids.Count >= StreamedBeforeStop && !stopped.Task.IsCompleted) await Task.Delay(50, timeout.Token);
            }
            Signal();
            return (ids, final ?? throw new InvalidOperationException($"stream {i} ended without a final chunk"));
        }

        var reads = Enumerable.Range(0, Requests).Select(Read).ToArray();
        await streamedAll.Task.WaitAsync(timeout.Token);
        var generatedAtStop = (await cluster.Engine.GetStatsAsync()).GeneratedTokens;
        Assert.True(generatedAtStop < Requests * MaxTokens / 2, $"{generatedAtStop} tokens were already generated when the node began to leave");
        Volatile.Write(ref stopping, true);
        var sw = Stopwatch.StartNew();
        await victim.StopAsync();
        output.WriteLine($"expert node {victim.Address} left in {sw.Elapsed.TotalSeconds:F1} s");
        stopped.TrySetResult();
        var results = await Task.WhenAll(reads);
        output.WriteLine($"all requests done {sw.Elapsed.TotalSeconds:F1} s after the node began to leave");

        int compared = 0, total = 0;
        for (int i = 0; i < Requests; i++)
        {
            var (ids, final) = results[i];
            Assert.True(final.Error is null, $"request {i} ended with error: {final.Error}");
            Assert.True(final.FinishReason is FinishReason.Length or FinishReason.Stop, $"request {i}: {final.FinishReason}");
            compared += DirectGreedy.AssertSameGreedy(want[i].Tokens, want[i].Margins, ids, $"request {i}");
            total += want[i].Tokens.Length;
            Assert.Equal(ids.Count, final.Usage!.CompletionTokens);
        }
        Assert.True(compared >= total * 3 / 4, $"only {compared} of {total} tokens were comparable (too many near-ties)");
        // Every request was still streaming when the node began to leave.
        for (int i = 0; i < Requests; i++)
            if (want[i].Tokens.Length > StreamedBeforeStop)
                Assert.True(tokensAfterStopStarted[i] > 0, $"request {i} had finished before the node began to leave");

        // Every expert now answers from the surviving node.
        var after = await cluster.LocateExpertsAsync();
        Assert.All(after, kv => Assert.Equal(survivor.Address, kv.Value));
        var stats = await cluster.Engine.GetStatsAsync();
        Assert.Equal(0, stats.Running);
        Assert.Equal(0, stats.KvBytesReserved);
    }
}
