using System.Collections.Immutable;
using MoeServer.Kernels.Generation;
using MoeServer.Kernels.Model;
using static MoeServer.Actors.Scheduling.SchedulerProtocol;

namespace MoeServer.Actors.Scheduling.Core;

/// <summary>What the scheduling core needs of a request: its prompt token ids and the limits that bear on KV memory
/// and time. Sampling, stop strings and text stay with the request's output stage.</summary>
public sealed record SequenceRequest(string RequestId, IReadOnlyList<int> PromptTokens)
{
    /// <summary>Most tokens to generate; null: the rest of the context window (capped at default-max-tokens), with
    /// nothing reserved for them.</summary>
    public int? MaxTokens { get; init; }
    /// <summary>Per-request routing (top-k, disabled experts): part of the prefix-cache key.</summary>
    public RoutingOverride? Routing { get; init; }
    /// <summary>When the request must have finished, on the core's clock; past it the request ends with an error.</summary>
    public DateTimeOffset? Deadline { get; init; }
}

/// <summary>One sequence's share of a step: the tokens to append at <see cref="StartPosition"/>.., the block table
/// the attention reads and writes (entry i holds positions i*BlockSize..; <see cref="NoBlock"/> for blocks a sliding
/// window already freed), and whether the step must return next-token logits for it. A copy: the compute thread never
/// sees the core's live state.</summary>
public sealed record ScheduledSegment(
    string RequestId,
    ImmutableArray<int> Tokens,
    int StartPosition,
    bool NeedsLogits,
    bool IsPrefill,
    ImmutableArray<int> BlockTable,
    RoutingOverride? Routing)
{
    public const int NoBlock = -1;

    /// <summary>Positions the tokens are written at.</summary>
    public IEnumerable<int> Positions => Enumerable.Range(StartPosition, Tokens.Length);

    /// <summary>Positions in the cache once this segment ran (the attention's context length).</summary>
    public int ContextLength => StartPosition + Tokens.Length;

    /// <summary>A decode row's next-token experts by layer as known before the step (exact or predicted), else null.</summary>
    public int[][]? NextExperts { get; init; }
    public bool NextExpertsExact { get; init; }
}

/// <summary>An immutable step plan: decode rows first, then prefill chunks.</summary>
public sealed record ScheduledStep(long StepId, ImmutableArray<ScheduledSegment> Segments, int BlockSize)
{
    public int TotalTokens => Segments.Sum(s => s.Tokens.Length);

    /// <summary>The decode rows' experts as a <see cref="PreGatePlan"/> (prefetch and step-start announcement).</summary>
    public PreGatePlan ToPreGatePlan(int numLayers, Func<int, double> predictedConfidence) =>
        PreGatePlan.For(StepId, numLayers, Segments.Where(s => !s.IsPrefill).Select(s => (s.NextExperts, s.NextExpertsExact)), predictedConfidence);
}

/// <summary>The output stage's verdict on a sampled token: the request ends here (EOS, a stop string or stop token, or
/// a limit it tracks itself).</summary>
public sealed record FinishDecision(FinishReason Reason, string? Error = null);

/// <summary>What one segment produced: the sampled token (segments that asked for logits), the output stage's finish
/// decision, and the next token's experts when they are already known (exact pre-gating, or a prediction trusted enough
/// for expert-aware batching).</summary>
public sealed record SegmentOutput(string RequestId, int? SampledToken = null, FinishDecision? Finish = null)
{
    public int[][]? NextExperts { get; init; }
    public bool NextExpertsExact { get; init; }
}

/// <summary>A step's results, one per planned segment in plan order, or the error that failed the whole step.</summary>
public sealed record StepOutput(long StepId, IReadOnlyList<SegmentOutput> Segments, string? Error = null)
{
    public static StepOutput Failed(long stepId, string error) => new(stepId, [], error);
}

/// <summary>What <see cref="SchedulerCore.Schedule"/> decided: the step to run (null: nothing to do) and what happened
/// to requests on the way (admissions, preemptions, deadlines).</summary>
public sealed record ScheduleResult(ScheduledStep? Step, IReadOnlyList<SchedulerEvent> Events);

/// <summary>Something the core tells the request side. All but <see cref="SchedulerDrained"/> name a request.</summary>
public abstract record SchedulerEvent;

/// <summary>Accepted into the wait queue.</summary>
public sealed record RequestQueued(string RequestId, int QueuePosition) : SchedulerEvent;

/// <summary>Refused at submission; <see cref="Field"/> names the request field at fault (null: not the request's fault).</summary>
public sealed record RequestRejected(string RequestId, RejectionKind Kind, string? Field, string Code, string Message) : SchedulerEvent;

/// <summary>Moved from the queue to the running batch (again, after a preemption: <see cref="Readmission"/>).
/// <see cref="CachedTokens"/> positions came from shared prefix blocks.</summary>
public sealed record RequestAdmitted(string RequestId, int CachedTokens, TimeSpan QueueTime, bool Readmission) : SchedulerEvent;

/// <summary>A token the request keeps (its <see cref="Index"/>-th generated token, from 0).</summary>
public sealed record TokenProduced(string RequestId, int TokenId, int Index) : SchedulerEvent;

/// <summary>Out of KV blocks: the request gave its blocks back and waits at the head of the queue; on readmission its
/// prompt and generated tokens are prefilled again (shared blocks still cached are reused).</summary>
public sealed record RequestPreempted(string RequestId, int TokensToRecompute, int BlocksFreed) : SchedulerEvent;

/// <summary>The request ended; its blocks are back in the pool.</summary>
public sealed record RequestFinished(string RequestId, FinishReason Reason, string? Error, int PromptTokens, int GeneratedTokens, int CachedPromptTokens) : SchedulerEvent;

/// <summary>Draining and nothing is left to run.</summary>
public sealed record SchedulerDrained : SchedulerEvent;

/// <summary>The core's counters and gauges.</summary>
public sealed record SchedulerCoreStats(
    int Running,
    int Waiting,
    int Paused,
    Kernels.Model.Paging.KvBlockPoolStats Blocks,
    long Preemptions,
    long PrefixLookups,
    long PrefixHitTokens,
    long Completed,
    long PromptTokensComputed,
    long GeneratedTokens,
    bool Draining);
