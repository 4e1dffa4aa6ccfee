using Akka.Configuration;
using MoeServer.Actors.Scheduling;
using MoeServer.Actors.Scheduling.Core;
using MoeServer.Kernels.Checkpoints;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Generation;
using MoeServer.Kernels.Model.Paging;
using MoeServer.Kernels.Tests.Support;

namespace MoeServer.Actors.Tests.Scheduling;

/// <summary>Issue 18's capacity targets, on the scheduling core with the <c>bench</c> preset's KV shape and the default
/// budget of hocon/base.hocon (bf16 blocks of 16 tokens, taken as sequences grow).</summary>
public class SchedulerCoreCapacityTests
{
    private static (SchedulerCoreOptions Options, KvBlockPool Pool, SchedulerOptions Hocon, ModelConfig Model) Bench()
    {
        var hocon = SchedulerOptions.FromConfig(ConfigurationFactory.ParseString(File.ReadAllText(Path.Combine(TrainedModels.RepoRoot(), "hocon", "base.hocon"))));
        var model = CheckpointPresets.Config(ModelArchitecture.Mixtral, CheckpointPreset.Bench);
        var pool = KvBlockPool.FromBudget(hocon.KvCacheBudgetBytes, KvShape.For(model));
        return (SchedulerCoreOptions.From(hocon, model), pool, hocon, model);
    }

    [Fact]
    public void Bench_preset_admits_32_concurrent_2k_token_chats_without_max_tokens_and_preempts_none()
    {
        var (options, pool, hocon, model) = Bench();
        // Before paging: prompt + default-max-tokens reserved in fp32 at admission.
        long reservedToday = (1536L + hocon.DefaultMaxTokens) * KvShape.For(model, KvDType.Float32).BytesPerToken;
        Assert.Equal(5, hocon.KvCacheBudgetBytes / reservedToday);

        var h = new CoreHarness(options, pool);
        const int prompt = 1536, reply = 512; // 2,048 tokens per chat: the whole chat, prompt and reply
        for (int i = 0; i < 32; i++) Assert.IsType<RequestQueued>(Assert.Single(h.Submit($"chat{i}", CoreHarness.Prompt(prompt, 100 + i), reply)));
        h.RunUntilIdle();

        Assert.Equal(32, h.MaxRunning);
        Assert.Empty(h.Events.OfType<RequestPreempted>());
        Assert.Equal(0, h.Core.Stats.Preemptions);
        for (int i = 0; i < 32; i++)
        {
            var f = h.FinishedOf($"chat{i}");
            Assert.Equal((FinishReason.Stop, reply), (f.Reason, f.GeneratedTokens));
        }
        Assert.Equal(PagedTokenModel.Reference(h.Prompts["chat31"], reply), h.Produced["chat31"]);
        Assert.True(h.MaxUsedBlocks <= pool.TotalBlocks);
        Assert.Equal(0, pool.UsedBlocks);
    }

    [Fact]
    public void Bench_preset_32_chats_sharing_a_1k_token_system_prompt_hold_it_once()
    {
        var (options, pool, _, _) = Bench();
        var h = new CoreHarness(options, pool);
        var system = CoreHarness.Prompt(1024, 7); // 64 blocks of 16
        for (int i = 0; i < 32; i++) h.Submit($"chat{i}", [.. system, .. CoreHarness.Prompt(256, 200 + i)], reply: 64);
        IReadOnlyList<int>? systemBlocks = null;
        bool checkedAllRunning = false;
        while (!h.Core.IsIdle)
        {
            Assert.NotNull(h.Step());
            var holders = Enumerable.Range(0, 32).Select(i => h.Core.BlocksOf($"chat{i}")).Where(b => b is { Count: >= 64 }).ToList();
            if (holders.Count == 0) continue;
            systemBlocks ??= holders[0]!.Take(64).ToArray();
            foreach (var b in holders) Assert.Equal(systemBlocks, b!.Take(64));
            Assert.All(systemBlocks, b => Assert.Equal(holders.Count, pool.RefCount(b)));
            // The pool holds the system prompt once plus each chat's own tokens.
            Assert.Equal(64 + holders.Sum(b => b!.Count - 64), pool.UsedBlocks);
            if (holders.Count == 32) checkedAllRunning = true;
        }
        Assert.True(checkedAllRunning, "the 32 chats never ran together");
        Assert.Equal(31, Enumerable.Range(0, 32).Count(i => h.FinishedOf($"chat{i}").CachedPromptTokens == 1024));
        Assert.Equal(0, h.Core.Stats.Preemptions);
        Assert.Equal(PagedTokenModel.Reference(h.Prompts["chat5"], 64), h.Produced["chat5"]);
    }
}
