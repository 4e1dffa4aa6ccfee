using Akka.Actor;
using Akka.Cluster;
using MoeServer.Actors.Cluster;
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

    /// <summary>One stream as its client saw it: text, last chunk, token ids, when it ended, and its longest wait between
    /// two tokens (a failure mid-stream shows as that gap).</summary>
    private sealed record StreamResult(string Text, TokenChunk Final, IReadOnlyList<int> Ids, DateTime FinishedAt, TimeSpan LongestGap);

    /// <summary>Submits the 8 prompts and waits until every stream has produced a few tokens.</summary>
    /// <param name="runToMaxTokens">Ban the end-of-sequence tokens, so no request can end on its own before a fault
    /// lands (under load a short answer could otherwise finish with <c>stop</c> between its first token and the fault).</param>
    private static async Task<List<Task<StreamResult>>> StartGenerationsAsync(MoeEngine engine, int maxTokens, bool runToMaxTokens = false)
    {
        var sampling = SamplingParams.Greedy with
        {
            MaxTokens = maxTokens,
            LogitBias = runToMaxTokens ? engine.Config.EosTokenIds.ToDictionary(e => e, _ => -SamplingParams.MaxAbsLogitBias) : null,
        };
        var started = new List<TaskCompletionSource>();
        var runs = new List<Task<StreamResult>>();
        for (int i = 0; i < Prompts.Length; i++)
        {
            var first = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            started.Add(first);
            var stream = await engine.SubmitAsync(new GenerationRequest($"fault-{i}-{Guid.NewGuid():N}", Prompts[i], sampling));
            runs.Add(Collect(stream, first));
        }
        await Task.WhenAll(started.Select(s => s.Task)).WaitAsync(TimeSpan.FromSeconds(60));
        return runs;
    }

    private static async Task<StreamResult> Collect(GenerationStream stream, TaskCompletionSource firstTokens)
    {
        var text = new System.Text.StringBuilder();
        var ids = new List<int>();
        TokenChunk? last = null;
        var gap = TimeSpan.Zero;
        var previous = DateTime.UtcNow;
        await foreach (var c in stream)
        {
            var now = DateTime.UtcNow;
            if (ids.Count > 0 && now - previous > gap) gap = now - previous;
            previous = now;
            text.Append(c.Text);
            if (c.TokenId >= 0) ids.Add(c.TokenId);
            if (ids.Count >= 3 || c.IsFinal) firstTokens.TrySetResult();
            last = c;
            await Task.Delay(ReadDelay);
            previous += ReadDelay; // the reader's own pace is not a wait for the engine
        }
        firstTokens.TrySetResult();
        return new StreamResult(text.ToString(), last!, ids, DateTime.UtcNow, gap);
    }

    private static void AssertSameAsDirect(string dir, StreamResult[] results, int maxTokens)
    {
        using var model = MoeModel.Load(dir, WeightPrecision.F32);
        var eos = new HashSet<int>(model.Config.EosTokenIds);
        for (int i = 0; i < Prompts.Length; i++)
        {
            var (_, final, ids, _, _) = results[i];
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
        await using var gateway = await TestNode.StartAsync(dir, NodeRole.Gateway, extra: PacedGateway);
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
        // The kill interrupted steps (the gateway computed the dead node's experts) rather than landing after the work was done.
        Assert.True(gateway.Logs.Contains("computing it on this node"), "no expert call was interrupted:\n" + string.Join('\n', gateway.Logs.Lines));

        // The generations did not wait for it, but the dead node's shards do move: every expert answers from the survivor.
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (true)
        {
            var problems = await ExpertPinger.PingAllAsync(gateway.Runtime.ExpertRegion!, gateway.Runtime.Config, TimeSpan.FromSeconds(5));
            if (problems.Count == 0) break;
            Assert.True(DateTime.UtcNow < deadline, $"{problems.Count} experts still do not answer, e.g. {problems[0].Expert}");
            await Task.Delay(500);
        }
    }

    /// <summary>Starts a child expert node with the shipped settings (no overrides).</summary>
    private static async Task<ExpertProcess> StartShippedChildAsync(string dir, string seed)
    {
        var child = ExpertProcess.Start(dir, "expert", 0, seed);
        var done = await Task.WhenAny(child.ClusterAddress, Task.Delay(TimeSpan.FromSeconds(60)));
        Assert.True(done == child.ClusterAddress, "the expert process did not start:\n" + child.Output);
        return child;
    }

    /// <summary>The shard coordinator is a singleton on the oldest node with role 'expert': its manager there logs the start.</summary>
    private static async Task WaitForCoordinatorAsync(ExpertProcess node)
    {
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (!node.Output.Contains("expertsCoordinator", StringComparison.Ordinal))
        {
            Assert.True(DateTime.UtcNow < deadline, "the oldest expert node never started the shard coordinator:\n" + node.Output);
            await Task.Delay(200);
        }
    }

    [Fact]
    public async Task Killing_the_oldest_expert_node_which_hosts_the_shard_coordinator_loses_nothing_with_the_shipped_settings()
    {
        // The defect this guards: the coordinator's host dies, its singleton moves only after down + removal (~40 s),
        // and with requests waiting on membership every one of them failed at the 40 s retry deadline.
        string dir = TinyCheckpoints.Get(ModelArchitecture.Mixtral);
        const int maxTokens = 200;
        await using var gateway = await TestNode.StartAsync(dir, NodeRole.Gateway, extra: PacedGateway, shippedTimings: true);
        using var oldest = await StartShippedChildAsync(dir, gateway.SeedNode);
        await WaitForMembersAsync(gateway, 2);
        await WaitForCoordinatorAsync(oldest);
        await using var younger = await TestNode.StartAsync(dir, NodeRole.Expert, gateway.SeedNode, shippedTimings: true);
        await WaitForMembersAsync(gateway, 3);
        await gateway.WaitReadyAsync();
        await WaitUntilHostingAsync(gateway, await oldest.ClusterAddress);

        var runs = await StartGenerationsAsync(gateway.Engine, maxTokens);
        oldest.KillHard();
        var results = await Task.WhenAll(runs).WaitAsync(TimeSpan.FromSeconds(120));
        AssertSameAsDirect(dir, results, maxTokens);
        Assert.True(gateway.Logs.Contains("computing it on this node"), "no expert call was interrupted:\n" + string.Join('\n', gateway.Logs.Lines));
        // Recovery does not wait on membership (about 40 s here): each stream's longest pause is the ask timeout and a step.
        var longest = results.Max(r => r.LongestGap);
        Assert.True(longest < TimeSpan.FromSeconds(20), $"a stream waited {longest.TotalSeconds:F1} s for a token");
    }

    [Fact]
    public async Task A_hung_expert_node_is_served_around_and_exits_with_code_3_when_it_resumes()
    {
        string dir = TinyCheckpoints.Get(ModelArchitecture.Qwen3Moe);
        const int maxTokens = 300;
        await using var gateway = await TestNode.StartAsync(dir, NodeRole.Gateway, extra: PacedGateway, shippedTimings: true);
        using var hung = await StartShippedChildAsync(dir, gateway.SeedNode); // the oldest expert node: the coordinator's host
        await WaitForMembersAsync(gateway, 2);
        await using var other = await TestNode.StartAsync(dir, NodeRole.Expert, gateway.SeedNode, shippedTimings: true);
        await WaitForMembersAsync(gateway, 3);
        await gateway.WaitReadyAsync();
        await WaitUntilHostingAsync(gateway, await hung.ClusterAddress);
        string hungAddress = await hung.ClusterAddress;

        var runs = await StartGenerationsAsync(gateway.Engine, maxTokens);
        hung.Freeze();
        try
        {
            var results = await Task.WhenAll(runs).WaitAsync(TimeSpan.FromSeconds(90));
            AssertSameAsDirect(dir, results, maxTokens);
            // Downed while frozen (failure detection + stable-after, ~25 s), never while it answered.
            var cluster = Akka.Cluster.Cluster.Get(gateway.System);
            var deadline = DateTime.UtcNow.AddSeconds(60);
            while (cluster.State.Members.Any(m => m.Address.ToString() == hungAddress && m.Status != MemberStatus.Down))
            {
                Assert.True(DateTime.UtcNow < deadline, "the frozen node was never downed");
                await Task.Delay(200);
            }
        }
        finally
        {
            hung.Thaw();
        }
        Assert.True(await hung.WaitForExitAsync(TimeSpan.FromSeconds(30)), "the node did not exit after resuming:\n" + hung.Output);
        Assert.Equal(NodeExitCodes.DownedByCluster, hung.ExitCode);
        Assert.Contains("frozen for", hung.Output, StringComparison.Ordinal);
        // The gateway still serves, now from the other node only.
        var after = await StartGenerationsAsync(gateway.Engine, 8);
        AssertSameAsDirect(dir, await Task.WhenAll(after).WaitAsync(TimeSpan.FromSeconds(60)), 8);
    }

    [Fact]
    public async Task An_expert_node_the_cluster_downs_exits_with_code_3()
    {
        string dir = TinyCheckpoints.Get(ModelArchitecture.Mixtral);
        await using var gateway = await TestNode.StartAsync(dir, NodeRole.Gateway);
        using var child = await StartChildAsync(dir, gateway);
        await WaitForMembersAsync(gateway, 2);
        Akka.Cluster.Cluster.Get(gateway.System).Down(Akka.Actor.Address.Parse(await child.ClusterAddress));
        Assert.True(await child.WaitForExitAsync(TimeSpan.FromSeconds(60)), "the downed node did not exit:\n" + child.Output);
        Assert.True(child.ExitCode == NodeExitCodes.DownedByCluster, $"exit code {child.ExitCode}:\n{child.Output}");
    }

    [Fact]
    public async Task Killing_the_oldest_lowest_addressed_of_two_gateways_leaves_the_other_serving()
    {
        // With keep-majority over the gateway role, two gateways tied and the tie kept the lowest address: killing that
        // gateway downed the survivor too. keep-oldest with down-if-alone keeps the survivor whichever gateway dies.
        string dir = TinyCheckpoints.Get(ModelArchitecture.Mixtral);
        var (low, high) = TwoFreePorts();
        using var first = ExpertProcess.Start(dir, "gateway", low, seedNode: null);
        Assert.True(await Task.WhenAny(first.ClusterAddress, Task.Delay(TimeSpan.FromSeconds(60))) == first.ClusterAddress,
            "the first gateway did not start:\n" + first.Output);
        string seed = $"127.0.0.1:{low}";
        await using var second = await TestNode.StartAsync(dir, NodeRole.Gateway, seed, PacedGateway + $"\nmoe.node.cluster-port = {high}", shippedTimings: true);
        await using var experts = await TestNode.StartAsync(dir, NodeRole.Expert, seed, shippedTimings: true);
        await WaitForMembersAsync(second, 3);
        await second.WaitReadyAsync();

        var runs = await StartGenerationsAsync(second.Engine, 200);
        first.KillHard();
        AssertSameAsDirect(dir, await Task.WhenAll(runs).WaitAsync(TimeSpan.FromSeconds(90)), 200);
        // The dead gateway is downed and removed; the survivor stays up and serves new requests.
        var cluster = Akka.Cluster.Cluster.Get(second.System);
        var deadline = DateTime.UtcNow.AddSeconds(90);
        while (cluster.State.Members.Any(m => m.Address.Port == low))
        {
            Assert.True(DateTime.UtcNow < deadline, "the dead gateway was never removed");
            await Task.Delay(200);
        }
        Assert.Equal(MemberStatus.Up, cluster.SelfMember.Status);
        Assert.False(second.Runtime.Status.DownedByCluster);
        var after = await StartGenerationsAsync(second.Engine, 8);
        AssertSameAsDirect(dir, await Task.WhenAll(after).WaitAsync(TimeSpan.FromSeconds(60)), 8);
    }

    private static (int Low, int High) TwoFreePorts()
    {
        var a = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        var b = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        a.Start();
        b.Start();
        int pa = ((System.Net.IPEndPoint)a.LocalEndpoint).Port, pb = ((System.Net.IPEndPoint)b.LocalEndpoint).Port;
        a.Stop();
        b.Stop();
        return (Math.Min(pa, pb), Math.Max(pa, pb));
    }

    [Fact]
    public async Task Without_failover_killing_every_expert_node_fails_the_requests_with_a_clear_error_within_30_seconds()
    {
        string dir = TinyCheckpoints.Get(ModelArchitecture.Olmoe);
        await using var gateway = await TestNode.StartAsync(dir, NodeRole.Gateway, extra: PacedGateway + "\nmoe.experts.failover.local = off");
        using var a = await StartChildAsync(dir, gateway);
        using var b = await StartChildAsync(dir, gateway);
        await WaitForMembersAsync(gateway, 3);
        await gateway.WaitReadyAsync();

        var runs = await StartGenerationsAsync(gateway.Engine, 200, runToMaxTokens: true);
        var killedAt = DateTime.UtcNow;
        a.KillHard();
        b.KillHard();
        var results = await Task.WhenAll(runs).WaitAsync(TimeSpan.FromSeconds(45));
        var took = DateTime.UtcNow - killedAt;
        Assert.True(took < TimeSpan.FromSeconds(30), $"requests failed only after {took.TotalSeconds:F1} s");
        foreach (var (_, final, _, _, _) in results)
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
