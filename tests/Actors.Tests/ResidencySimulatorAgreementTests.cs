using MoeServer.Actors.Hosting;
using MoeServer.Actors.Tests.Support;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Residency;
using MoeServer.Kernels.Tests.Support;
using Xunit.Abstractions;

namespace MoeServer.Actors.Tests;

/// <summary>The offline simulator replays a recorded routing trace to what the live residency of an expert node did
/// with the same uses: the bench's Belady bounds and policy sweeps stand on this.</summary>
public class ResidencySimulatorAgreementTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData(ModelArchitecture.RouterDecoupled, "lookahead")]
    [InlineData(ModelArchitecture.RouterDecoupled, "lru")]
    [InlineData(ModelArchitecture.Mixtral, "lfu")]
    public async Task Replaying_the_trace_gives_the_live_hit_rate_within_one_point(ModelArchitecture arch, string policy)
    {
        string dir = TinyCheckpoints.Get(arch);
        await using var node = await TestNode.StartAsync(dir, NodeRole.All, extra: ParityConfig.Batching + $$"""

            moe.experts.residency { budget = "40%", policy = {{policy}}, prefetch = off }
            moe.scheduler.pregate.speculative-horizon = 0
            """);
        await node.WaitReadyAsync();
        var residency = node.Runtime.ExpertResidency!;
        var warm = residency.Resident();
        var before = residency.Stats();
        await node.Engine.StartRoutingTraceAsync();
        // Two rounds: the first step's messages go through the shard region and may overtake each other; later
        // ones go straight to the local entities, in order. The difference must stay within the point.
        await ParityConfig.AssertWorkloadAsync(node.Engine, arch, $"agree-{policy}-a-");
        await ParityConfig.AssertWorkloadAsync(node.Engine, arch, $"agree-{policy}-b-");
        var trace = await node.Engine.StopRoutingTraceAsync();
        var after = residency.Stats();

        long uses = after.Uses - before.Uses, hits = after.Hits - before.Hits;
        double live = (double)hits / uses;
        var steps = trace.StepUses();
        var visibility = policy == "lookahead" ? PlanVisibility.WholeStep : PlanVisibility.None;
        var sim = ResidencySimulator.ReplaySteps(steps, trace.Layers, residency.Capacity, policy, visibility, initiallyResident: warm);
        output.WriteLine($"{arch} {policy}, capacity {residency.Capacity}: {uses} uses, live hit rate {live:P2}, simulated {sim.HitRate:P2}");
        Assert.Equal(sim.Uses, uses);
        Assert.True(Math.Abs(live - sim.HitRate) <= 0.01, $"{policy}: live {live:P2} vs simulated {sim.HitRate:P2} over {uses} uses");
        double bound = BeladyBound.NoLoadRate(trace.ExpertUses(), residency.Capacity);
        Assert.True(sim.NoLoadRate <= bound + 1e-9);
    }
}
