using MoeServer.Kernels.Model;
using Akka.Actor;
using MoeServer.Actors.Experts;
using MoeServer.Actors.Generation;
using MoeServer.Actors.Hosting;

namespace MoeServer.Actors.Tests.Support;

/// <summary>All cluster tests share this collection: they run one at a time, after the parallel single-node tests.</summary>
[CollectionDefinition("cluster", DisableParallelization = true)]
public sealed class ClusterTestsDefinition;

/// <summary>
/// A 3-node cluster in the test process: a gateway (scheduler, attention, KV caches; no expert entities) and two
/// expert nodes, each its own ActorSystem on TCP loopback with an ephemeral port.
/// </summary>
public sealed class TestCluster : IAsyncDisposable
{
    private TestCluster(TestNode gateway, TestNode expert1, TestNode expert2)
    {
        Gateway = gateway;
        Expert1 = expert1;
        Expert2 = expert2;
    }

    public TestNode Gateway { get; }
    public TestNode Expert1 { get; }
    public TestNode Expert2 { get; }
    public MoeEngine Engine => Gateway.Engine;

    public static async Task<TestCluster> StartAsync(string model, string? extra = null)
    {
        var gateway = await TestNode.StartAsync(model, NodeRole.Gateway, extra: extra);
        TestNode? e1 = null, e2 = null;
        try
        {
            // Both expert nodes join together, so shards are spread over both from the start.
            var t1 = TestNode.StartAsync(model, NodeRole.Expert, gateway.SeedNode, extra);
            var t2 = TestNode.StartAsync(model, NodeRole.Expert, gateway.SeedNode, extra);
            try
            {
                await Task.WhenAll(t1, t2);
            }
            finally
            {
                if (t1.IsCompletedSuccessfully) e1 = t1.Result;
                if (t2.IsCompletedSuccessfully) e2 = t2.Result;
            }
            await gateway.WaitReadyAsync();
            await Task.WhenAll(e1!.WaitReadyAsync(), e2!.WaitReadyAsync());
            return new TestCluster(gateway, e1, e2);
        }
        catch
        {
            await DisposeAllAsync(gateway, e1, e2);
            throw;
        }
    }

    /// <summary>Where every expert entity answers from (pinging starts entities that are not running yet).</summary>
    public async Task<IReadOnlyDictionary<ExpertId, string>> LocateExpertsAsync()
    {
        var region = Gateway.Runtime.ExpertRegion ?? throw new InvalidOperationException("the gateway has no expert region");
        var experts = ExpertPinger.AllExperts(Gateway.Runtime.Config).ToArray();
        var pongs = await Task.WhenAll(experts.Select(e =>
            region.Ask<ExpertProtocol.Pong>(new ExpertProtocol.Ping(e), TimeSpan.FromSeconds(10))));
        foreach (var p in pongs)
        {
            Assert.Null(p.Error);
            Assert.True(p.Loaded, $"expert {p.Expert} answered from {p.Node} without its weights");
        }
        return pongs.ToDictionary(p => p.Expert, p => p.Node);
    }

    /// <summary>Every expert entity lives on an expert node, none on the gateway.</summary>
    public async Task AssertExpertsOnlyOnExpertNodesAsync()
    {
        var where = await LocateExpertsAsync();
        Assert.NotEmpty(where);
        foreach (var (expert, node) in where)
        {
            Assert.NotEqual(Gateway.Address, node);
            Assert.True(node == Expert1.Address || node == Expert2.Address,
                $"expert {expert} answered from {node}, which is neither expert node ({Expert1.Address}, {Expert2.Address})");
        }
    }

    public ValueTask DisposeAsync() => new(DisposeAllAsync(Gateway, Expert1, Expert2));

    /// <summary>
    /// Members leave one at a time, the cluster leader last. Two members leaving at once, or a leader leaving while
    /// others stay, often leave one of them waiting out the cluster-exiting phase's timeout (10 s) for its exit to be
    /// confirmed; one at a time, each leave takes about a second.
    /// </summary>
    private static async Task DisposeAllAsync(TestNode? gateway, TestNode? e1, TestNode? e2)
    {
        var nodes = new[] { e1, e2, gateway }.Where(n => n is not null).Select(n => n!).ToList();
        string? leader = null;
        try
        {
            leader = Akka.Cluster.Cluster.Get(nodes[^1].System).State.Leader?.ToString();
        }
        catch (Exception)
        {
            // the node is already gone; any order will do
        }
        foreach (var node in nodes.OrderBy(n => n.Address == leader))
            await node.DisposeAsync();
    }
}
