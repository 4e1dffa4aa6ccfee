using MoeServer.Kernels.Generation;
using MoeServer.Kernels.Model.Paging;

namespace MoeServer.Actors.Scheduling.Core;

/// <summary>
/// A request inside the core (vLLM v1's shape): all its known tokens (prompt, then generated), how many of them have
/// keys/values in its blocks, and the block table. Prefilling until <see cref="PrefillEnd"/> tokens are computed (the
/// prompt, or after a preemption the prompt and everything generated); then one decode token per step. Owned by the
/// core; plans carry copies.
/// </summary>
internal sealed class CoreSequence
{
    public required SequenceRequest Request { get; init; }
    public required int PromptLength { get; init; }
    /// <summary>Most tokens it may generate (max_tokens, the context window, or what the whole pool holds).</summary>
    public required int TokenLimit { get; init; }
    public required ulong RoutingKey { get; init; }
    public required long Arrival { get; init; }
    public required DateTimeOffset QueuedAt { get; init; }
    public string Id => Request.RequestId;

    /// <summary>Prompt then generated token ids.</summary>
    public List<int> Tokens { get; } = [];
    public int Generated => Tokens.Count - PromptLength;
    /// <summary>Leading tokens whose keys/values are in the blocks.</summary>
    public int Computed { get; set; }
    /// <summary>Tokens to compute before the next sample (set at each admission).</summary>
    public int PrefillEnd { get; set; }
    public bool IsPrefilling => Computed < PrefillEnd;

    /// <summary>Block of each BlockSize positions; <see cref="ScheduledSegment.NoBlock"/> where a sliding window freed it.</summary>
    public List<int> Blocks { get; } = [];
    /// <summary>Leading blocks whose hash is known (registered with the pool or found there).</summary>
    public int HashedBlocks { get; set; }
    public BlockHash LastHash { get; set; }

    public bool Running { get; set; }
    public long AdmitOrder { get; set; }
    public bool EverAdmitted { get; set; }
    public int CachedPromptTokens { get; set; }
    public int Preemptions { get; set; }
    public bool Paused { get; set; }
    public bool InStep { get; set; }
    public FinishDecision? PendingFinish { get; set; }
    public long LastScheduledStep { get; set; }
    public int[][]? NextExperts { get; set; }
    public bool NextExpertsExact { get; set; }

    public int HeldBlocks => Blocks.Count(b => b != ScheduledSegment.NoBlock);

    public FinishReason? Reason => PendingFinish?.Reason;
}
