using Akka.Actor;
using Akka.Cluster;
using MoeServer.Actors.Experts;
using MoeServer.Actors.Generation;
using MoeServer.Actors.Hosting;
using MoeServer.Actors.Tests.Support;
using MoeServer.Kernels.Checkpoints;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Generation;
using MoeServer.Kernels.Model;
using MoeServer.Kernels.Sampling;
using MoeServer.Kernels.Tests.Support;

namespace MoeServer.Actors.Tests;

/// <summary>
/// Expert nodes that die, stop, or serve the wrong checkpoint. The gateway runs in the test process; the expert node
/// that fails is a real child process of the server executable (<c>--role expert</c>).
/// </summary>
[Collection("cluster")]
public class FaultToleranceTests
{
    private const string ChildHocon = """
        akka.cluster.failure-detector.acceptable-heartbeat-pause = 4s
        akka.cluster.split-brain-resolver.stable-after = 5s
        """;

    /// <summary>Clients read at their own pace (25 ms per chunk) and the gateway buffers only 2 chunks per stream, so
    /// generations are still running when a node fails (a tiny model would otherwise finish within the blink).</summary>
    private const string PacedGateway = "moe.scheduler.stream-buffer-chunks = 2";

    private static readonly TimeSpan ReadDelay = TimeSpan.FromMilliseconds(25);

    private static readonly int[][] Prompts =
        Enumerable.Range(0, 8).Select(i => Enumerable.Range(0, 3 + 4 * i).Select(j => 10 + (i * 37 + j * 11) % 200).ToArray()).ToArray();

    private static async Task<ExpertProcess> StartChildAsync(string dir, TestNode gateway)
    {
        var child = ExpertProcess.Start(dir, gateway.SeedNode, ChildHocon);
        var done = await Task.WhenAny(child.ClusterAddress, Task.Delay(TimeSpan.FromSeconds(60)));
        Assert.True(done == child.ClusterAddress, "the expert process did not start:\n" + child.Output);
        return child;
    }

    private static async Task WaitForMembersAsync(TestNode gateway, int upMembers)
    {
        var cluster = Akka.Cluster.Cluster.Get(gateway.System);
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (cluster.State.Members.Count(m => m.Status == MemberStatus.Up) < upMembers)
        {
            Assert.True(DateTime.UtcNow < deadline, $"cluster has {cluster.State.Members.Count} members, expected {upMembers} up");
            await Task.Delay(100);
        }
    }

    /// <summary>Waits until the node at <paramref name="address"/> hosts some expert shards (new members get shards
    /// by rebalancing, a few seconds after they join).</summary>
    private static async Task WaitUntilHostingAsync(TestNode gateway, string address)
    {
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (true)
        {
            var hosts = new HashSet<string>();
            foreach (var e in ExpertPinger.AllExperts(gateway.Runtime.Config))
            {
                try
                {
                    var pong = await gateway.Runtime.ExpertRegion!.Ask<ExpertProtocol.Pong>(new ExpertProtocol.Ping(e), TimeSpan.FromSeconds(5));
                    hosts.Add(pong.Node);
                }
                catch (AskTimeoutException)
                {
                    // its shard is being handed over to the new member (up to the 10 s handoff-timeout): ask again
                }
            }
            if (hosts.Contains(address)) return;
            Assert.True(DateTime.UtcNow < deadline, $"{address} hosts no expert; hosts: {string.Join(", ", hosts)}");
            await Task.Delay(500);
        }
    }

    /// <summary>Submits the 8 prompts and waits until every stream has produced a few tokens.</summary>
    private static async Task<List<Task<(string Text, TokenChunk Final, IReadOnlyList<int> Ids, DateTime FinishedAt)>>> StartGenerationsAsync(MoeEngine engine, int maxTokens)
    {
        var started = new List<TaskCompletionSource>();
        var runs = new List<Task<(string, TokenChunk, IReadOnlyList<int>, DateTime)>>();
        for (int i = 0; i < Prompts.Length; i++)
        {
            var first = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            started.Add(first);
            var stream = await engine.SubmitAsync(new GenerationRequest($"fault-{i}-{Guid.NewGuid():N}", Prompts[i],
                SamplingParams.Greedy with { MaxTokens = maxTokens }));
            runs.Add(Collect(stream, first));
        }
        await Task.WhenAll(started.Select(s => s.Task)).WaitAsync(TimeSpan.FromSeconds(60));
        return runs;
    }

    private static async Task<(string, TokenChunk, IReadOnlyList<int>, DateTime)> Collect(GenerationStream stream, TaskCompletionSource firstTokens)
    {
        var text = new System.Text.StringBuilder();
        var ids = new List<int>();
        TokenChunk? last = null;
        await foreach (var c in stream)
        {
            text.Append(c.Text);
            if (c.TokenId >= 0) ids.Add(c.TokenId);
            if (ids.Count >= 3 || c.IsFinal) firstTokens.TrySetResult();
            last = c;
            await Task.Delay(ReadDelay);
        }
        firstTokens.TrySetResult();
        return (text.ToString(), last!, ids, DateTime.UtcNow);
    }

    private static void AssertSameAsDirect(string dir, (string Text, TokenChunk Final, IReadOnlyList<int> Ids, DateTime FinishedAt)[] results, int maxTokens)
    {
        using var model = MoeModel.Load(dir, WeightPrecision.F32);
        var eos = new HashSet<int>(model.Config.EosTokenIds);
        for (int i = 0; i < Prompts.Length; i++)
        {
            var (_, final, ids, _) = results[i];
            Assert.True(final.Error is null, $"request {i} failed: {final.Error}");
            var (want, margins) = DirectGreedy.Run(model, Prompts[i], maxTokens, eos: eos);
            DirectGreedy.AssertSameGreedy(want, margins, ids, $"request {i}");
        }
    }

    [Fact]
    public async Task Killing_an_expert_node_mid_generation_keeps_every_generation_unchanged()
    {
        string dir = TinyCheckpoints.Get(ModelArchitecture.Mixtral);
        const int maxTokens = 100;
        // Recovery is failure detection + stable-after + hand-off: ~10 s here, but a loaded 2-core CI machine has
        // taken over 20 s, so the router waits longer than the other tests let it.
        await using var gateway = await TestNode.StartAsync(dir, NodeRole.Gateway, extra: PacedGateway + "\nmoe.experts.retry-deadline = 50s");
        await using var survivor = await TestNode.StartAsync(dir, NodeRole.Expert, gateway.SeedNode);
        using var victim = await StartChildAsync(dir, gateway);
        await WaitForMembersAsync(gateway, 3);
        await gateway.WaitReadyAsync();
        await WaitUntilHostingAsync(gateway, await victim.ClusterAddress);

        var runs = await StartGenerationsAsync(gateway.Engine, maxTokens);
        var killedAt = DateTime.UtcNow;
        victim.KillHard();
        var results = await Task.WhenAll(runs).WaitAsync(TimeSpan.FromSeconds(90));
        AssertSameAsDirect(dir, results, maxTokens);
        // The kill interrupted steps (the router had to ask again) rather than landing after the work was done.
        Assert.True(gateway.Logs.Contains("did not answer within"), "no expert call was interrupted:\n" + string.Join('\n', gateway.Logs.Lines));

        // Every expert now answers from the surviving node.
        var problems = await ExpertPinger.PingAllAsync(gateway.Runtime.ExpertRegion!, gateway.Runtime.Config, TimeSpan.FromSeconds(5));
        Assert.Empty(problems);
    }

    [Fact]
    public async Task Killing_every_expert_node_fails_the_requests_with_a_clear_error_within_30_seconds()
    {
        string dir = TinyCheckpoints.Get(ModelArchitecture.Olmoe);
        await using var gateway = await TestNode.StartAsync(dir, NodeRole.Gateway, extra: PacedGateway);
        using var a = await StartChildAsync(dir, gateway);
        using var b = await StartChildAsync(dir, gateway);
        await WaitForMembersAsync(gateway, 3);
        await gateway.WaitReadyAsync();

        var runs = await StartGenerationsAsync(gateway.Engine, 200);
        var killedAt = DateTime.UtcNow;
        a.KillHard();
        b.KillHard();
        var results = await Task.WhenAll(runs).WaitAsync(TimeSpan.FromSeconds(45));
        var took = DateTime.UtcNow - killedAt;
        Assert.True(took < TimeSpan.FromSeconds(30), $"requests failed only after {took.TotalSeconds:F1} s");
        foreach (var (_, final, _, _) in results)
        {
            Assert.Equal(FinishReason.Error, final.FinishReason);
            Assert.Contains("expert", final.Error!, StringComparison.Ordinal);
            Assert.Contains("did not answer", final.Error!, StringComparison.Ordinal);
        }
        var stats = await gateway.Engine.GetStatsAsync();
        Assert.Equal(0, stats.Running);
        Assert.Equal(0, stats.KvBytesReserved);
    }

    [Fact]
    public async Task Sigterm_on_an_expert_node_drains_without_losing_a_request()
    {
        string dir = TinyCheckpoints.Get(ModelArchitecture.Qwen3Moe);
        const int maxTokens = 300; // ~7.5 s at the readers' pace: longer than the node takes to hand off and exit
        await using var gateway = await TestNode.StartAsync(dir, NodeRole.Gateway, extra: PacedGateway);
        await using var survivor = await TestNode.StartAsync(dir, NodeRole.Expert, gateway.SeedNode);
        using var leaving = await StartChildAsync(dir, gateway);
        await WaitForMembersAsync(gateway, 3);
        await gateway.WaitReadyAsync();
        await WaitUntilHostingAsync(gateway, await leaving.ClusterAddress);

        var runs = await StartGenerationsAsync(gateway.Engine, maxTokens);
        leaving.Terminate();
        Assert.True(await leaving.WaitForExitAsync(TimeSpan.FromSeconds(60)), "the expert process did not exit after SIGTERM:\n" + leaving.Output);
        var exitedAt = DateTime.UtcNow;
        Assert.True(leaving.ExitCode == 0, $"exit code {leaving.ExitCode}:\n{leaving.Output}");
        var results = await Task.WhenAll(runs).WaitAsync(TimeSpan.FromSeconds(90));
        AssertSameAsDirect(dir, results, maxTokens);
        // Generation went on after the node had gone: its shards were handed off, not waited out.
        Assert.Contains(results, r => r.FinishedAt > exitedAt);
    }

    [Fact]
    public async Task Sigterm_drains_a_gateway_without_losing_a_request()
    {
        string dir = TinyCheckpoints.Get(ModelArchitecture.Mixtral);
        await using var node = await TestNode.StartAsync(dir, NodeRole.All, extra: PacedGateway);
        await node.WaitReadyAsync();
        var runs = await StartGenerationsAsync(node.Engine, 30);
        var stopping = node.StopAsync(); // what SIGTERM does in the server executable: the host stops
        await Task.Delay(50);
        await Assert.ThrowsAsync<EngineUnavailableException>(() =>
            node.Engine.SubmitAsync(new GenerationRequest("late", [1, 2, 3], SamplingParams.Greedy with { MaxTokens = 4 })));
        var results = await Task.WhenAll(runs).WaitAsync(TimeSpan.FromSeconds(60));
        await stopping;
        AssertSameAsDirect(dir, results, 30);
    }

    [Fact]
    public async Task A_node_with_a_different_checkpoint_is_refused_and_gets_no_work()
    {
        string dir = TinyCheckpoints.Get(ModelArchitecture.Mixtral);
        string other = Path.Combine(Path.GetTempPath(), "moe-other-" + Guid.NewGuid().ToString("N")[..8]);
        var cfg = CheckpointPresets.Config(ModelArchitecture.Mixtral, CheckpointPreset.Tiny);
        CheckpointFactory.Create(cfg, other, new GeneratorOptions { Seed = 99 });
        try
        {
            await using var gateway = await TestNode.StartAsync(dir, NodeRole.Gateway, extra: PacedGateway);
            await using var good = await TestNode.StartAsync(dir, NodeRole.Expert, gateway.SeedNode);
            await using var stranger = await TestNode.StartAsync(other, NodeRole.Expert, gateway.SeedNode);
            await gateway.WaitReadyAsync();
            var deadline = DateTime.UtcNow.AddSeconds(30);
            while (stranger.Runtime.Status.Phase != NodePhase.Refused)
            {
                Assert.True(DateTime.UtcNow < deadline, $"the node was not refused: {stranger.Runtime.Status.Readiness().Reason}");
                await Task.Delay(100);
            }
            Assert.True(stranger.Logs.Contains("differs from the cluster's"), string.Join('\n', stranger.Logs.Lines));
            Assert.False(stranger.Runtime.Status.Readiness().Ready);
            var members = Akka.Cluster.Cluster.Get(gateway.System).State.Members;
            Assert.DoesNotContain(members, m => m.Address.ToString() == stranger.Address);
            // Every expert answers, and never from the refused node.
            foreach (var e in ExpertPinger.AllExperts(gateway.Runtime.Config))
            {
                var pong = await gateway.Runtime.ExpertRegion!.Ask<ExpertProtocol.Pong>(new ExpertProtocol.Ping(e), TimeSpan.FromSeconds(5));
                Assert.NotEqual(stranger.Address, pong.Node);
            }
        }
        finally
        {
            Directory.Delete(other, true);
        }
    }
}
