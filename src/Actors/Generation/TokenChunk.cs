using MoeServer.Kernels.Generation;
using MoeServer.Kernels.Sampling;

namespace MoeServer.Actors.Generation;

/// <summary>Token counts of a finished request; <paramref name="CachedPromptTokens"/> of the prompt's tokens were copied
/// from the prefix cache instead of prefilled.</summary>
public sealed record GenerationUsage(int PromptTokens, int CompletionTokens, int CachedPromptTokens = 0)
{
    public int TotalTokens => PromptTokens + CompletionTokens;
}

/// <summary>
/// One piece of a request's output stream: the text that became final with this token (held back while a UTF-8
/// character or a possible stop string is incomplete). The last chunk of every stream carries the finish reason and
/// usage; a last chunk may have no token (<see cref="TokenId"/> = -1), e.g. when the request was cancelled.
/// </summary>
public sealed record TokenChunk(string RequestId, string Text, int TokenId, SampledToken? Token)
{
    public FinishReason? FinishReason { get; init; }
    public GenerationUsage? Usage { get; init; }
    /// <summary>Why the request failed (finish reason error): deadline, unavailable experts, ...</summary>
    public string? Error { get; init; }
    /// <summary>The request ended (finish reason error) because its deadline (<see cref="GenerationRequest.Timeout"/>)
    /// passed.</summary>
    public bool DeadlineExceeded { get; init; }
    /// <summary>The experts the gate chose for the forward pass that produced this token, by layer (an empty array
    /// for dense layers). Null on chunks without a token.</summary>
    public IReadOnlyList<int[]>? ExpertsByLayer { get; init; }
    /// <summary>How long the request waited for a batch slot; on the first chunk of its stream only.</summary>
    public TimeSpan? QueueTime { get; init; }
    /// <summary>When the engine produced the chunk (a <see cref="System.Diagnostics.Stopwatch"/> timestamp of the
    /// engine's process): token timing without the delay of however the stream is read.</summary>
    public long ProducedAt { get; init; } = System.Diagnostics.Stopwatch.GetTimestamp();
    public bool IsFinal => FinishReason is not null;
}
