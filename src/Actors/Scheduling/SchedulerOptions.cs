using Akka.Configuration;

namespace MoeServer.Actors.Scheduling;

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

    public static SchedulerOptions FromConfig(Config c) => new SchedulerOptions
    {
        MaxRunningSequences = c.GetInt("moe.scheduler.max-running-sequences", 64),
        MaxBatchTokens = c.GetInt("moe.scheduler.max-batch-tokens", 512),
        PrefillChunk = c.GetInt("moe.scheduler.prefill-chunk", 256),
        MaxQueuedRequests = c.GetInt("moe.scheduler.max-queued-requests", 256),
        KvCacheBudgetBytes = c.GetByteSize("moe.scheduler.kv-cache-budget") ?? (2L << 30),
        StreamBufferChunks = c.GetInt("moe.scheduler.stream-buffer-chunks", 64),
        DefaultMaxTokens = c.GetInt("moe.scheduler.default-max-tokens", 4096),
    }.Validated();

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
        if (MaxQueuedRequests < 0) throw new ArgumentException("moe.scheduler.max-queued-requests must be >= 0");
        if (KvCacheBudgetBytes <= 0) throw new ArgumentException("moe.scheduler.kv-cache-budget must be positive");
        return this;
    }
}
