using MoeServer.Kernels.Config;

namespace MoeServer.Actors.Scheduling.Core;

/// <summary>The core's budget: the <c>moe.scheduler</c> knobs that bear on scheduling, and the model's context.</summary>
public sealed record SchedulerCoreOptions
{
    public int MaxRunningSequences { get; init; } = 64;
    public int MaxBatchTokens { get; init; } = 512;
    public int PrefillChunk { get; init; } = 256;
    public int MaxQueuedRequests { get; init; } = 256;
    /// <summary>Cap on generated tokens for requests without max_tokens (nothing is reserved for them).</summary>
    public int DefaultMaxTokens { get; init; } = 4096;
    /// <summary>Most decode rows per step; 0: up to <see cref="MaxBatchTokens"/>.</summary>
    public int MaxDecodeBatch { get; init; }
    public BatchingPolicy Batching { get; init; } = BatchingPolicy.Fcfs;
    public int MaxWaitSteps { get; init; } = 4;
    /// <summary>The model's context window (max_position_embeddings).</summary>
    public int MaxContextTokens { get; init; } = 4096;
    /// <summary>Attention window (Mistral/Mixtral sliding_window); blocks wholly behind it are freed.</summary>
    public int? SlidingWindow { get; init; }
    /// <summary>Reuse full blocks whose tokens repeat (automatic prefix caching).</summary>
    public bool PrefixCaching { get; init; } = true;

    public int DecodeCapacity => MaxDecodeBatch > 0 ? Math.Min(MaxDecodeBatch, MaxBatchTokens) : MaxBatchTokens;

    public static SchedulerCoreOptions From(SchedulerOptions options, ModelConfig model)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(model);
        return new SchedulerCoreOptions
        {
            MaxRunningSequences = options.MaxRunningSequences,
            MaxBatchTokens = options.MaxBatchTokens,
            PrefillChunk = options.PrefillChunk,
            MaxQueuedRequests = options.MaxQueuedRequests,
            DefaultMaxTokens = options.DefaultMaxTokens,
            MaxDecodeBatch = options.MaxDecodeBatch,
            Batching = options.Batching,
            MaxWaitSteps = options.MaxWaitSteps,
            MaxContextTokens = model.MaxPositionEmbeddings,
            SlidingWindow = model.SlidingWindow,
            PrefixCaching = options.PrefixCacheBytes > 0,
        }.Validated();
    }

    public SchedulerCoreOptions Validated()
    {
        static void Positive(int v, string name)
        {
            if (v <= 0) throw new ArgumentException($"{name} must be positive (got {v})");
        }
        Positive(MaxRunningSequences, "max-running-sequences");
        Positive(MaxBatchTokens, "max-batch-tokens");
        Positive(PrefillChunk, "prefill-chunk");
        Positive(MaxQueuedRequests, "max-queued-requests");
        Positive(DefaultMaxTokens, "default-max-tokens");
        Positive(MaxWaitSteps, "max-wait-steps");
        Positive(MaxContextTokens, "max context tokens");
        if (MaxDecodeBatch < 0) throw new ArgumentException($"max-decode-batch must not be negative (got {MaxDecodeBatch})");
        if (SlidingWindow is <= 0) throw new ArgumentException($"sliding window must be positive (got {SlidingWindow})");
        return this;
    }
}
