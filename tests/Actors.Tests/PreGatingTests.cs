using MoeServer.Actors.Hosting;
using MoeServer.Actors.Tests.Support;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Tests.Support;

namespace MoeServer.Actors.Tests;

/// <summary>Pre-gating, expert residency and expert-aware batching change when and where work happens, never what
/// the model computes: the engine's greedy tokens stay the direct loop's.</summary>
public class PreGatingTests
{
    [Fact]
    public async Task Exact_pre_gating_gives_the_direct_models_tokens_and_every_pre_gated_row_routes_as_planned()
    {
        var arch = ModelArchitecture.RouterDecoupled;
        await using var node = await TestNode.StartAsync(TinyCheckpoints.Get(arch), NodeRole.All, extra: ParityConfig.Batching);
        await node.WaitReadyAsync();
        await ParityConfig.AssertWorkloadAsync(node.Engine, arch, "pregate-");
        var g = node.Engine.Gauges;
        long planned = Enumerable.Range(0, g.NumLayers).Sum(l => g.Predictions(l, exact: true));
        long right = Enumerable.Range(0, g.NumLayers).Sum(l => g.PredictionHits(l, exact: true));
        Assert.True(planned > 100, $"only {planned} decode rows were pre-gated");
        Assert.Equal(planned, right);
    }

    [Fact]
    public async Task Without_pre_gating_the_keep_last_prediction_is_scored_instead()
    {
        var arch = ModelArchitecture.RouterDecoupled;
        await using var node = await TestNode.StartAsync(TinyCheckpoints.Get(arch), NodeRole.All,
            extra: ParityConfig.Batching + "\nmoe.scheduler.pregate.exact = off");
        await node.WaitReadyAsync();
        await ParityConfig.AssertWorkloadAsync(node.Engine, arch, "nopregate-");
        var g = node.Engine.Gauges;
        Assert.Equal(0, Enumerable.Range(0, g.NumLayers).Sum(l => g.Predictions(l, exact: true)));
        Assert.True(Enumerable.Range(0, g.NumLayers).Sum(l => g.Predictions(l, exact: false)) > 100);
    }

    public static TheoryData<ModelArchitecture, string, string> ResidencyCases => new()
    {
        { ModelArchitecture.RouterDecoupled, "lookahead", "disk" },
        { ModelArchitecture.Mixtral, "lookahead", "memory" },
        { ModelArchitecture.Qwen3Moe, "lru", "memory" },
    };

    [Theory]
    [MemberData(nameof(ResidencyCases))]
    public async Task A_small_expert_budget_with_prefetch_loads_and_evicts_but_never_changes_outputs(ModelArchitecture arch, string policy, string tier)
    {
        await using var node = await TestNode.StartAsync(TinyCheckpoints.Get(arch), NodeRole.All, extra: ParityConfig.Batching + $$"""

            moe.experts.residency { budget = "25%", policy = {{policy}}, tier = {{tier}}, prefetch = on }
            """);
        await node.WaitReadyAsync();
        var residency = node.Runtime.ExpertResidency!;
        var before = residency.Stats();
        await ParityConfig.AssertWorkloadAsync(node.Engine, arch, $"budget-{policy}-");
        var s = residency.Stats();
        Assert.True(s.Uses - before.Uses > 50, $"{s.Uses - before.Uses} expert uses");
        Assert.True(s.Evictions > 0 && s.Loads > 0, $"the budget never bit: {s}");
        Assert.InRange(residency.ResidentCount, 1, residency.Capacity);
        if (policy == "lookahead") Assert.True(s.PrefetchLoads > 0, $"nothing was prefetched: {s}");
    }

    [Theory]
    [InlineData(ModelArchitecture.RouterDecoupled)]
    [InlineData(ModelArchitecture.Mixtral)]
    public async Task Expert_aware_batching_of_few_decode_rows_gives_the_direct_loops_tokens(ModelArchitecture arch)
    {
        await using var node = await TestNode.StartAsync(TinyCheckpoints.Get(arch), NodeRole.All, extra: ParityConfig.Batching +
            "\nmoe.scheduler { batching = expert-aware, max-decode-batch = 3, max-wait-steps = 3 }");
        await node.WaitReadyAsync();
        await ParityConfig.AssertWorkloadAsync(node.Engine, arch, "aware-");
    }
}

[Collection("cluster")]
public class ClusterResidencyTests
{
    [Fact]
    public async Task Expert_nodes_with_small_budgets_prefetch_from_the_gateways_announcements_and_outputs_stay_exact()
    {
        var arch = ModelArchitecture.RouterDecoupled;
        await using var cluster = await TestCluster.StartAsync(TinyCheckpoints.Get(arch), ParityConfig.Batching + """

            moe.experts.residency { budget = 2, policy = lookahead, prefetch = on }
            """);
        await ParityConfig.AssertWorkloadAsync(cluster.Engine, arch, "cluster-budget-");
        // Shards may all sit on one expert node until a rebalance: every node that ran experts must have prefetched.
        int active = 0;
        foreach (var node in new[] { cluster.Expert1, cluster.Expert2 })
        {
            var r = node.Runtime.ExpertResidency!;
            var s = r.Stats();
            Assert.Equal(2, r.Capacity);
            Assert.InRange(r.ResidentCount, 0, 2);
            if (s.Uses == 0) continue;
            active++;
            Assert.True(s.PrefetchLoads > 0, $"{node.Address}: {s}");
        }
        Assert.True(active > 0, "no expert node ran an expert");
        Assert.Null(cluster.Gateway.Runtime.ExpertResidency); // the gateway hosts no experts
    }
}

public class DecodeBatchLimitTests
{
    [Theory]
    [InlineData("fcfs")]
    [InlineData("expert-aware")]
    public async Task No_step_runs_more_decode_rows_than_max_decode_batch_and_no_sequence_waits_past_the_bound(string policy)
    {
        var arch = ModelArchitecture.RouterDecoupled;
        await using var node = await TestNode.StartAsync(TinyCheckpoints.Get(arch), NodeRole.All, extra: ParityConfig.Batching +
            $"\nmoe.scheduler {{ batching = {policy}, max-decode-batch = 3, max-wait-steps = 4 }}");
        await node.WaitReadyAsync();
        await node.Engine.StartRoutingTraceAsync();
        await ParityConfig.AssertWorkloadAsync(node.Engine, arch, $"limit-{policy}-");
        var trace = await node.Engine.StopRoutingTraceAsync();
        Assert.All(trace.Steps, s => Assert.True(s.Segments.Count(g => !g.Prefill) <= 3, $"step {s.Step}: {s.Segments.Count(g => !g.Prefill)} decode rows"));
        Assert.Contains(trace.Steps, s => s.Segments.Count(g => !g.Prefill) == 3);
        // Between two decode rows of a sequence (or its first token and its next row) at most ceil(8 / 3) = 3 steps
        // pass under fcfs and max-wait-steps = 4 under expert-aware (8 sequences at most are ready).
        var last = new Dictionary<string, long>();
        foreach (var step in trace.Steps)
        {
            foreach (var seg in step.Segments)
            {
                if (!seg.Prefill && last.TryGetValue(seg.SequenceId, out long prev))
                    Assert.True(step.Step - prev <= 4, $"{seg.SequenceId} waited {step.Step - prev} steps (until step {step.Step})");
                last[seg.SequenceId] = step.Step;
            }
        }
    }
}

/// <summary>On the trained router-decoupled model (real, skewed routing), exact pre-gating plus a small expert budget
/// with prefetch and expert-aware batching still give the direct model's greedy tokens.</summary>
public class TrainedPreGatingTests
{
    [Fact]
    public async Task Pre_gated_budgeted_expert_aware_engine_gives_the_trained_models_direct_greedy_tokens()
    {
        string dir = TrainedModels.Dir("readme-moe");
        var tokenizer = Kernels.Tokenization.HfTokenizer.Load(dir);
        string[] texts =
        [
            "In the beginning God created the heaven and the earth.",
            "And God said, Let there be light:",
            "hacker n. A person who enjoys exploring the details of programmable systems",
            "The LORD is my shepherd;",
            "And it came to pass",
            "kludge",
        ];
        var eos = GreedyWorkload.EosIds(dir);
        ExpectedGeneration[] want;
        using (var model = Kernels.Model.MoeModel.Load(dir, Kernels.Model.WeightPrecision.F32))
        {
            want = texts.Select((t, i) =>
            {
                var prompt = tokenizer.Encode(t, parseSpecialTokens: false).ToArray();
                var (tokens, margins) = DirectGreedy.Run(model, prompt, 16, eos: eos);
                return new ExpectedGeneration($"trained-{i}", prompt, 16, tokens, margins, eos.Contains(tokens[^1]));
            }).ToArray();
        }
        await using var node = await TestNode.StartAsync(dir, NodeRole.All, extra: """
            moe.scheduler { max-decode-batch = 2, batching = expert-aware, max-wait-steps = 3 }
            moe.experts.residency { budget = "25%", policy = lookahead, prefetch = on }
            """);
        await node.WaitReadyAsync();
        var got = await GreedyWorkload.RunAllAsync(node.Engine, want.Select(w => GreedyWorkload.Request(w)));
        int compared = 0;
        for (int i = 0; i < want.Length; i++) compared += GreedyWorkload.AssertMatches(want[i], got[i], want[i].RequestId);
        Assert.True(compared >= want.Sum(w => w.Tokens.Length) * 3 / 4, $"only {compared} tokens comparable");
        var g = node.Engine.Gauges;
        long planned = Enumerable.Range(0, g.NumLayers).Sum(l => g.Predictions(l, exact: true));
        Assert.True(planned > 0);
        Assert.Equal(planned, Enumerable.Range(0, g.NumLayers).Sum(l => g.PredictionHits(l, exact: true)));
        Assert.True(node.Runtime.ExpertResidency!.Stats().PrefetchLoads > 0);
    }
}
