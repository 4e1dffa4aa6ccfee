using MoeServer.Actors.Generation;
using MoeServer.Actors.Hosting;
using MoeServer.Actors.Tests.Support;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Model;
using MoeServer.Kernels.Sampling;
using MoeServer.Kernels.Tests.Support;

namespace MoeServer.Actors.Tests;

public class PrefixCacheTests
{
    private const string PrefixCache = "\nmoe.scheduler.prefix-cache { max-bytes = 64 MiB, min-tokens = 2 }";

    [Theory]
    [MemberData(nameof(ParityConfig.Families), MemberType = typeof(ParityConfig))]
    public async Task Prompts_that_reuse_a_cached_prefix_generate_the_direct_loops_tokens(ModelArchitecture arch)
    {
        string dir = TinyCheckpoints.Get(arch);
        await using var node = await TestNode.StartAsync(dir, NodeRole.All, extra: ParityConfig.Batching + PrefixCache);
        await node.WaitReadyAsync();
        await ParityConfig.AssertWorkloadAsync(node.Engine, arch, "first-");
        var first = node.Engine.Gauges.PrefixCache;
        Assert.True(first.Bytes > 0, "finished prompts must be kept");

        // the same prompts again: each copies all but its last token from its own earlier run
        await ParityConfig.AssertWorkloadAsync(node.Engine, arch, "again-");
        var again = node.Engine.Gauges.PrefixCache;
        var reusable = GreedyWorkload.PromptLengths.Where(n => n - 1 >= 2).ToArray();
        Assert.True(again.Hits - first.Hits >= reusable.Length, $"{again.Hits - first.Hits} hits, want {reusable.Length}");
        Assert.True(again.TokensReused - first.TokensReused >= reusable.Sum(n => n - 1),
            $"{again.TokensReused - first.TokensReused} tokens reused, want at least {reusable.Sum(n => n - 1)}");
    }

    [Fact]
    public async Task A_prefix_cached_under_other_routing_is_not_reused_and_a_longer_prompt_reuses_the_shared_part()
    {
        string dir = TinyCheckpoints.Get(ModelArchitecture.Mixtral);
        await using var node = await TestNode.StartAsync(dir, NodeRole.All, extra: PrefixCache);
        await node.WaitReadyAsync();
        var engine = node.Engine;
        var prompt = GreedyWorkload.Prompt(20, 7, engine.Config.VocabSize);
        async Task<IReadOnlyList<int>> Run(string id, IReadOnlyList<int> tokens, RoutingOverride? routing = null) =>
            (await GreedyWorkload.RunAllAsync(engine, [new GenerationRequest(id, tokens, SamplingParams.Greedy with { MaxTokens = 4 }, routing)]))[0].TokenIds;

        await Run("plain", prompt);
        var before = engine.Gauges.PrefixCache;
        await Run("top-1", prompt, new RoutingOverride(TopKExperts: 1));
        Assert.Equal(before.Hits, engine.Gauges.PrefixCache.Hits); // top-1 routing makes other keys and values

        // a longer prompt sharing the first 20 tokens copies them, and generates what it generates without the cache
        var longer = prompt.Concat(GreedyWorkload.Prompt(6, 8, engine.Config.VocabSize)).ToArray();
        var withCache = await Run("longer", longer);
        var after = engine.Gauges.PrefixCache;
        Assert.Equal(before.Hits + 1, after.Hits);
        Assert.Equal(before.TokensReused + 20, after.TokensReused);
        using var model = MoeModel.Load(dir, WeightPrecision.F32);
        using var seq = model.NewSequence();
        var direct = new List<int>();
        var logits = model.ForwardSequence(seq, longer)[^1];
        for (int i = 0; i < 4; i++)
        {
            int next = Array.IndexOf(logits, logits.Max());
            direct.Add(next);
            logits = model.ForwardSequence(seq, [next])[^1];
        }
        Assert.NotEmpty(withCache);
        Assert.Equal(direct.Take(withCache.Count), withCache); // the engine stops early at an end-of-text token
    }
}
