using Akka.Configuration;

namespace MoeServer.Actors.Scheduling;

/// <summary>How a layer-wise model's next-token experts are predicted before the step.</summary>
public enum LayerwisePrediction
{
    /// <summary>Each layer's gate applied to the sampled token's embedding.</summary>
    TokenGates,
    /// <summary>The token keeps its sequence's last token's experts.</summary>
    KeepLast,
}

/// <summary><c>moe.scheduler</c>: the continuous-batching budget (see hocon/base.hocon for each knob).</summary>
public sealed record SchedulerOptions
{
    public int MaxRunningSequences { get; init; } = 64;
    public int MaxBatchTokens { get; init; } = 512;
    public int PrefillChunk { get; init; } = 256;
    public int MaxQueuedRequests { get; init; } = 256;
    public long KvCacheBudgetBytes { get; init; } = 2L << 30;
    public int StreamBufferChunks { get; init; } = 64;
    public int DefaultMaxTokens { get; init; } = 4096;
    /// <summary>Most decode rows per step; 0: up to <see cref="MaxBatchTokens"/>.</summary>
    public int MaxDecodeBatch { get; init; }
    public BatchingPolicy Batching { get; init; } = BatchingPolicy.Fcfs;
    public int MaxWaitSteps { get; init; } = 4;
    /// <summary>Run the decoupled router right after sampling (router-decoupled models).</summary>
    public bool ExactPreGate { get; init; } = true;
    /// <summary>Later layers whose gates are applied at each layer to predict their experts (layer-wise models).</summary>
    public int SpeculativeHorizon { get; init; } = 2;
    public LayerwisePrediction LayerwisePrediction { get; init; } = LayerwisePrediction.TokenGates;
    /// <summary>Layer-wise models: a layer's predictions are used (batching, step-start announcement) when they have held this often.</summary>
    public double AnnounceConfidence { get; init; } = 0.5;
    /// <summary>Bytes of finished prompts' keys/values kept for reuse by prompts that start the same way; 0: off.</summary>
    public long PrefixCacheBytes { get; init; } = 256L << 20;
    /// <summary>Shortest shared prefix worth copying (and shortest prompt worth keeping).</summary>
    public int PrefixCacheMinTokens { get; init; } = 16;

    public static SchedulerOptions FromConfig(Config c) => new SchedulerOptions
    {
        MaxRunningSequences = c.GetInt("moe.scheduler.max-running-sequences", 64),
        MaxBatchTokens = c.GetInt("moe.scheduler.max-batch-tokens", 512),
        PrefillChunk = c.GetInt("moe.scheduler.prefill-chunk", 256),
        MaxQueuedRequests = c.GetInt("moe.scheduler.max-queued-requests", 256),
        KvCacheBudgetBytes = c.GetByteSize("moe.scheduler.kv-cache-budget") ?? (2L << 30),
        StreamBufferChunks = c.GetInt("moe.scheduler.stream-buffer-chunks", 64),
        DefaultMaxTokens = c.GetInt("moe.scheduler.default-max-tokens", 4096),
        MaxDecodeBatch = c.GetInt("moe.scheduler.max-decode-batch", 0),
        Batching = ParseBatching(c.GetString("moe.scheduler.batching", "fcfs")),
        MaxWaitSteps = c.GetInt("moe.scheduler.max-wait-steps", 4),
        ExactPreGate = c.GetBoolean("moe.scheduler.pregate.exact", true),
        SpeculativeHorizon = c.GetInt("moe.scheduler.pregate.speculative-horizon", 2),
        AnnounceConfidence = c.GetDouble("moe.scheduler.pregate.announce-confidence", 0.5),
        PrefixCacheBytes = c.GetByteSize("moe.scheduler.prefix-cache.max-bytes") ?? (256L << 20),
        PrefixCacheMinTokens = c.GetInt("moe.scheduler.prefix-cache.min-tokens", 16),
        LayerwisePrediction = c.GetString("moe.scheduler.pregate.layerwise-prediction", "token-gates").Trim().ToLowerInvariant() switch
        {
            "token-gates" => LayerwisePrediction.TokenGates,
            "keep-last" => LayerwisePrediction.KeepLast,
            var v => throw new ArgumentException($"moe.scheduler.pregate.layerwise-prediction: unknown '{v}' (expected token-gates or keep-last)"),
        },
    }.Validated();

    public static BatchingPolicy ParseBatching(string s) => s.Trim().ToLowerInvariant() switch
    {
        "fcfs" => BatchingPolicy.Fcfs,
        "expert-aware" => BatchingPolicy.ExpertAware,
        _ => throw new ArgumentException($"moe.scheduler.batching: unknown '{s}' (expected fcfs or expert-aware)"),
    };

    /// <summary>Decode rows one step may take.</summary>
    public int DecodeCapacity => MaxDecodeBatch > 0 ? Math.Min(MaxDecodeBatch, MaxBatchTokens) : MaxBatchTokens;

    public SchedulerOptions Validated()
    {
        void Positive(int v, string name)
        {
            if (v <= 0) throw new ArgumentException($"moe.scheduler.{name} must be positive (got {v})");
        }
        Positive(MaxRunningSequences, "max-running-sequences");
        Positive(MaxBatchTokens, "max-batch-tokens");
        Positive(PrefillChunk, "prefill-chunk");
        Positive(StreamBufferChunks, "stream-buffer-chunks");
        Positive(DefaultMaxTokens, "default-max-tokens");
        Positive(MaxWaitSteps, "max-wait-steps");
        if (MaxDecodeBatch < 0) throw new ArgumentException("moe.scheduler.max-decode-batch must be >= 0 (0: no limit below max-batch-tokens)");
        if (AnnounceConfidence is < 0 or > 1) throw new ArgumentException("moe.scheduler.pregate.announce-confidence must be within 0..1");
        if (SpeculativeHorizon < 0) throw new ArgumentException("moe.scheduler.pregate.speculative-horizon must be >= 0");
        if (MaxQueuedRequests < 0) throw new ArgumentException("moe.scheduler.max-queued-requests must be >= 0");
        if (KvCacheBudgetBytes <= 0) throw new ArgumentException("moe.scheduler.kv-cache-budget must be positive");
        if (PrefixCacheBytes < 0) throw new ArgumentException("moe.scheduler.prefix-cache.max-bytes must be >= 0 (0: off)");
        Positive(PrefixCacheMinTokens, "prefix-cache.min-tokens");
        return this;
    }
}
