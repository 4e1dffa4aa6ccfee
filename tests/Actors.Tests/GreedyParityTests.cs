using MoeServer.Actors.Hosting;
using MoeServer.Actors.Tests.Support;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Tests.Support;

namespace MoeServer.Actors.Tests;

/// <summary>Knobs that make 8 small requests exercise continuous batching: chunked prefill mixed with decode steps,
/// and a step token budget that a long prompt's chunk has to share.</summary>
internal static class ParityConfig
{
    public const string Batching = "moe.scheduler { prefill-chunk = 16, max-batch-tokens = 40 }";

    public static TheoryData<ModelArchitecture> Families =>
        new() { ModelArchitecture.Mixtral, ModelArchitecture.Qwen2Moe, ModelArchitecture.Qwen3Moe, ModelArchitecture.Olmoe, ModelArchitecture.RouterDecoupled };

    /// <summary>Concurrent greedy requests give the direct loop's tokens; most steps must be comparable.</summary>
    public static async Task AssertWorkloadAsync(Generation.MoeEngine engine, ModelArchitecture arch, string prefix)
    {
        var want = GreedyWorkload.For(arch);
        var got = await GreedyWorkload.RunAllAsync(engine, want.Select(w => GreedyWorkload.Request(w, prefix)));
        int compared = 0, total = 0;
        for (int i = 0; i < want.Length; i++)
        {
            compared += GreedyWorkload.AssertMatches(want[i], got[i], $"{prefix}{want[i].RequestId} (prompt {want[i].Prompt.Length})");
            total += want[i].Tokens.Length;
        }
        Assert.True(compared >= total * 3 / 4, $"only {compared} of {total} tokens were comparable (too many near-ties)");
    }
}

public class SingleNodeGreedyParityTests
{
    [Theory]
    [MemberData(nameof(ParityConfig.Families), MemberType = typeof(ParityConfig))]
    public async Task Concurrent_requests_with_chunked_prefill_generate_the_direct_loops_tokens(ModelArchitecture arch)
    {
        string dir = TinyCheckpoints.Get(arch);
        await using var node = await TestNode.StartAsync(dir, NodeRole.All, extra: ParityConfig.Batching);
        await node.WaitReadyAsync();
        await ParityConfig.AssertWorkloadAsync(node.Engine, arch, "single-");
    }
}

[Collection("cluster")]
public class ClusterGreedyParityTests
{
    [Theory]
    [MemberData(nameof(ParityConfig.Families), MemberType = typeof(ParityConfig))]
    public async Task Three_node_cluster_generates_the_direct_loops_tokens_with_experts_only_on_expert_nodes(ModelArchitecture arch)
    {
        string dir = TinyCheckpoints.Get(arch);
        await using var cluster = await TestCluster.StartAsync(dir, ParityConfig.Batching);
        await ParityConfig.AssertWorkloadAsync(cluster.Engine, arch, "cluster-");
        await cluster.AssertExpertsOnlyOnExpertNodesAsync();
    }
}
