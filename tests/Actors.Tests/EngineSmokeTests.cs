using MoeServer.Actors.Generation;
using MoeServer.Actors.Hosting;
using MoeServer.Actors.Tests.Support;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Model;
using MoeServer.Kernels.Sampling;
using MoeServer.Kernels.Tests.Support;

namespace MoeServer.Actors.Tests;

public class EngineSmokeTests
{
    [Fact]
    public async Task Single_node_engine_generates_like_the_direct_loop()
    {
        string dir = TinyCheckpoints.Get(ModelArchitecture.Mixtral);
        using var model = MoeModel.Load(dir, WeightPrecision.F32);
        await using var node = await TestNode.StartAsync(dir, NodeRole.All);
        await node.WaitReadyAsync();
        int[] prompt = [11, 22, 33, 44];
        var (want, margins) = DirectGreedy.Run(model, prompt, 12);
        var stream = await node.Engine.SubmitAsync(new GenerationRequest("r1", prompt, SamplingParams.Greedy with { MaxTokens = 12 }));
        var (_, final, ids) = await stream.CollectAsync();
        Assert.Null(final.Error);
        DirectGreedy.AssertSameGreedy(want, margins, ids, "r1");
    }
}

public class ClusterSmokeTests
{
    [Fact]
    public async Task Three_node_cluster_generates_like_the_direct_loop()
    {
        string dir = TinyCheckpoints.Get(ModelArchitecture.Qwen2Moe);
        using var model = MoeModel.Load(dir, WeightPrecision.F32);
        await using var gateway = await TestNode.StartAsync(dir, NodeRole.Gateway);
        await using var e1 = await TestNode.StartAsync(dir, NodeRole.Expert, gateway.SeedNode);
        await using var e2 = await TestNode.StartAsync(dir, NodeRole.Expert, gateway.SeedNode);
        await gateway.WaitReadyAsync();
        int[] prompt = [5, 6, 7, 8, 9];
        var (want, margins) = DirectGreedy.Run(model, prompt, 12);
        var stream = await gateway.Engine.SubmitAsync(new GenerationRequest("c1", prompt, SamplingParams.Greedy with { MaxTokens = 12 }));
        var (_, final, ids) = await stream.CollectAsync();
        Assert.Null(final.Error);
        DirectGreedy.AssertSameGreedy(want, margins, ids, "c1");
    }
}
