using MoeServer.Actors.Hosting;
using MoeServer.Gateway.Tests;
using MoeServer.Gateway.Tests.Support;

namespace MoeServer.Ops.Tests;

/// <summary>The read-mostly ops tests share one cluster (run one after another); tests that take nodes away get their own.</summary>
[CollectionDefinition(Name)]
public sealed class OpsClusterCollection : ICollectionFixture<OpsCluster>
{
    public const string Name = "ops-cluster";
}

/// <summary>A real 3-node cluster for the ops tests: a gateway and two expert nodes (three ActorSystems on loopback TCP,
/// each with its own Kestrel on 127.0.0.1), expert nodes keeping at most 3 experts resident.</summary>
public sealed class OpsCluster : IAsyncLifetime
{
    public const string ExpertHocon = "moe.experts.residency { budget = 3, policy = lru }";

    public GatewayServer Gateway { get; private set; } = null!;
    public GatewayServer Expert1 { get; private set; } = null!;
    public GatewayServer Expert2 { get; private set; } = null!;
    public IEnumerable<GatewayServer> ExpertNodes => [Expert1, Expert2];

    public async Task InitializeAsync()
    {
        Gateway = await GatewayServer.StartAsync(TinyModel.Dir, null, NodeRole.Gateway, waitReady: false);
        var e1 = GatewayServer.StartAsync(TinyModel.Dir, ExpertHocon, NodeRole.Expert, Gateway.SeedNode, waitReady: false);
        var e2 = GatewayServer.StartAsync(TinyModel.Dir, ExpertHocon, NodeRole.Expert, Gateway.SeedNode, waitReady: false);
        Expert1 = await e1;
        Expert2 = await e2;
        await Gateway.WaitReadyAsync();
        await Expert1.WaitReadyAsync();
        await Expert2.WaitReadyAsync();
    }

    /// <summary>moectl in-process against <paramref name="node"/>: exit code, stdout, stderr.</summary>
    public static async Task<(int Exit, string Out, string Err)> RunAsync(GatewayServer node, params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int exit = await OpsCli.RunAsync(["--endpoint", node.BaseAddress.ToString(), .. args], stdout, stderr);
        return (exit, stdout.ToString(), stderr.ToString());
    }

    /// <summary>Polls <paramref name="condition"/> until it holds (fails after a minute, naming what it waited for).</summary>
    public static async Task EventuallyAsync(Func<Task<bool>> condition, string what)
    {
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (!await condition())
        {
            Assert.True(DateTime.UtcNow < deadline, $"timed out waiting for {what}");
            await Task.Delay(250);
        }
    }

    /// <summary>A short greedy completion through the node's OpenAI API; it must succeed.</summary>
    public static async Task GenerateAsync(GatewayServer gateway, int tokens = 6)
    {
        using var r = await gateway.Http.PostAsync("/v1/completions", new StringContent(
            $$"""{"prompt":"ops check","max_tokens":{{tokens}},"temperature":0}""", System.Text.Encoding.UTF8, "application/json"));
        Assert.Equal(System.Net.HttpStatusCode.OK, r.StatusCode);
    }

    public async Task DisposeAsync()
    {
        foreach (var n in new[] { Expert1, Expert2, Gateway })
            if (n is not null) await n.DisposeAsync();
    }
}
