using MoeServer.Actors.Generation;
using MoeServer.Actors.Hosting;
using MoeServer.Actors.Tests.Support;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Model;
using MoeServer.Kernels.Sampling;
using MoeServer.Kernels.Tests.Reference;
using MoeServer.Kernels.Tests.Support;

namespace MoeServer.Actors.Tests;

/// <summary>
/// Per-request top_k_experts and disabled_experts reach the MoE layers: the engine's greedy tokens equal the float64
/// reference model's under the same override, and at least one override changes the output.
/// </summary>
internal static class RoutingOverrideCase
{
    private const int MaxTokens = 16;
    private static readonly int[] PromptLengths = [5, 19];

    /// <summary>(name, engine override, reference top-k, reference disabled experts of every sparse layer).</summary>
    private static IEnumerable<(string Name, RoutingOverride? Routing, int? TopK, IReadOnlySet<int>? Disabled)> Variants(ModelConfig cfg)
    {
        yield return ("baseline", null, null, null);
        yield return ("top1", new RoutingOverride(TopKExperts: 1), 1, null);
        var disabled = Enumerable.Range(0, cfg.NumLayers).Where(cfg.IsSparseLayer)
            .SelectMany(l => new[] { (l, 0), (l, 1) }).ToHashSet();
        yield return ("no-experts-0-1", new RoutingOverride(DisabledExperts: disabled), null, new HashSet<int> { 0, 1 });
    }

    /// <summary>Greedy tokens of the float64 reference under an override (the family's own reference).</summary>
    private delegate (int[] Tokens, float[] Margins) ReferenceGreedy(int[] prompt, int? topK, IReadOnlySet<int>? disabled);

    private static ReferenceGreedy ReferenceFor(ModelArchitecture arch, string dir, ModelConfig cfg, HashSet<int> eos)
    {
        if (arch != ModelArchitecture.RouterDecoupled)
        {
            var reference = ReferenceModel.Load(dir);
            return (prompt, topK, disabled) =>
            {
                var seq = reference.NewSequence();
                return Greedy(prompt, tokens => reference.Forward(seq, tokens, topK, disabled), eos);
            };
        }
        var decoupled = ReferenceRouterDecoupledModel.Load(dir);
        return (prompt, topK, disabled) =>
        {
            // "disable expert e of every sparse layer" as (layer, expert) pairs
            var pairs = disabled?.SelectMany(e => Enumerable.Range(0, cfg.NumLayers).Where(cfg.IsSparseLayer).Select(l => (l, e))).ToHashSet();
            var seq = decoupled.NewSequence();
            return Greedy(prompt, tokens => decoupled.Forward(seq, tokens, topK, pairs), eos);
        };
    }

    private static (int[] Tokens, float[] Margins) Greedy(int[] prompt, Func<IReadOnlyList<int>, double[][]> forward, HashSet<int> eos)
    {
        var logits = forward(prompt)[^1];
        var tokens = new List<int>();
        var margins = new List<float>();
        for (int i = 0; i < MaxTokens; i++)
        {
            int best = ReferenceModel.Argmax(logits);
            tokens.Add(best);
            margins.Add((float)ReferenceModel.TopTwoMargin(logits));
            if (eos.Contains(best)) break;
            if (i + 1 < MaxTokens) logits = forward([best])[0];
        }
        return (tokens.ToArray(), margins.ToArray());
    }

    public static async Task AssertOverridesReachTheExpertsAsync(MoeEngine engine, ModelArchitecture arch, string prefix)
    {
        string dir = TinyCheckpoints.Get(arch);
        var eos = GreedyWorkload.EosIds(dir);
        var cfg = engine.Config;
        var referenceGreedy = ReferenceFor(arch, dir, cfg, eos);
        var runs = (from v in Variants(cfg)
                    from len in PromptLengths
                    select (v.Name, v.Routing, v.TopK, v.Disabled, Prompt: GreedyWorkload.Prompt(len, 300 + len, cfg.VocabSize))).ToArray();

        // Every variant runs concurrently, in the same batches: the override is per request.
        var got = await GreedyWorkload.RunAllAsync(engine, runs.Select(r => new GenerationRequest(
            $"{prefix}{r.Name}-{r.Prompt.Length}", r.Prompt, SamplingParams.Greedy with { MaxTokens = MaxTokens }, r.Routing)));

        int compared = 0, total = 0;
        var tokensOf = new Dictionary<(string, int), IReadOnlyList<int>>();
        for (int i = 0; i < runs.Length; i++)
        {
            var r = runs[i];
            var (want, margins) = referenceGreedy(r.Prompt, r.TopK, r.Disabled);
            Assert.Null(got[i].Final.Error);
            compared += DirectGreedy.AssertSameGreedy(want, margins, got[i].TokenIds, $"{arch} {r.Name}, prompt of {r.Prompt.Length}");
            total += want.Length;
            tokensOf[(r.Name, r.Prompt.Length)] = got[i].TokenIds;
        }
        Assert.True(compared >= total * 3 / 4, $"only {compared} of {total} tokens were comparable (too many near-ties)");

        // The options demonstrably change routing: some override changes some output.
        bool changed = runs.Where(r => r.Routing is not null)
            .Any(r => !tokensOf[(r.Name, r.Prompt.Length)].SequenceEqual(tokensOf[("baseline", r.Prompt.Length)]));
        Assert.True(changed, $"{arch}: neither top_k_experts = 1 nor disabling experts 0 and 1 changed any output");
    }
}

public class SingleNodeRoutingOverrideTests
{
    [Theory]
    [MemberData(nameof(ParityConfig.Families), MemberType = typeof(ParityConfig))]
    public async Task Top_k_and_disabled_experts_give_the_reference_models_tokens_under_the_same_override(ModelArchitecture arch)
    {
        await using var node = await TestNode.StartAsync(TinyCheckpoints.Get(arch), NodeRole.All, extra: ParityConfig.Batching);
        await node.WaitReadyAsync();
        await RoutingOverrideCase.AssertOverridesReachTheExpertsAsync(node.Engine, arch, "single-");
    }
}

[Collection("cluster")]
public class ClusterRoutingOverrideTests
{
    [Fact]
    public async Task Top_k_and_disabled_experts_reach_the_remote_experts()
    {
        var arch = ModelArchitecture.Mixtral;
        await using var cluster = await TestCluster.StartAsync(TinyCheckpoints.Get(arch), ParityConfig.Batching);
        await RoutingOverrideCase.AssertOverridesReachTheExpertsAsync(cluster.Engine, arch, "cluster-");
        await cluster.AssertExpertsOnlyOnExpertNodesAsync();
    }
}
