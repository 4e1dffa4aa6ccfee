using Akka.Actor;
using MoeServer.Actors.Generation;
using MoeServer.Kernels.Model;
using MoeServer.Kernels.Sampling;
using MoeServer.Kernels.Tokenization;

namespace MoeServer.Actors.Scheduling;

/// <summary>A request inside the scheduler: waiting, prefilling (in chunks) or decoding. Owned by the scheduler actor;
/// the compute thread only reads the cache and tokens of the plan it was given.</summary>
internal sealed class SequenceState
{
    public required GenerationRequest Request { get; init; }
    public required IActorRef Generation { get; init; }
    public required int MaxTokens { get; init; }
    public required long ReservedKvBytes { get; init; }
    public required TokenSampler Sampler { get; init; }
    public required StreamingDetokenizer Detokenizer { get; init; }
    public required StopStringMatcher Stops { get; init; }
    public string Id => Request.RequestId;
    public int[] Prompt { get; init; } = [];
    public KvCache? Cache { get; set; }
    /// <summary>Prompt tokens already in the cache.</summary>
    public int Prefilled { get; set; }
    /// <summary>Of those, the ones copied from the prefix cache at admission.</summary>
    public int CachedPromptTokens { get; set; }
    public int Generated { get; set; }
    public int LastToken { get; set; } = -1;
    public bool InStep { get; set; }
    public bool Paused { get; set; }
    public (Kernels.Generation.FinishReason Reason, string? Error)? PendingFinish { get; set; }
    public long QueuedAt { get; init; } = System.Diagnostics.Stopwatch.GetTimestamp();
    /// <summary>Time from submission to admission into the running batch, until it is sent on the first chunk.</summary>
    public TimeSpan? QueueTime { get; set; }
    public bool QueueTimeSent { get; set; }
    /// <summary>Experts of the last sampled token, by layer (for the final chunk).</summary>
    public int[][]? LastExperts { get; set; }

    /// <summary>Step the sequence last got a decode row in (or was admitted at): the batching's fairness clock.</summary>
    public long LastScheduledStep { get; set; }
    /// <summary>The experts the next token needs, by layer: exact (pre-gated) or predicted (its last token's).</summary>
    public int[][]? NextExperts { get; set; }
    public bool NextExpertsExact { get; set; }

    public bool IsPrefilling => Prefilled < Prompt.Length;
}
