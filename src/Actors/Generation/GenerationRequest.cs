using MoeServer.Kernels.Model;
using MoeServer.Kernels.Sampling;

namespace MoeServer.Actors.Generation;

/// <summary>What the gateway hands the engine: a tokenized prompt and how to continue it.</summary>
/// <param name="RequestId">Appears in every log line about the request on every node.</param>
/// <param name="Routing">Per-request MoE options: top_k_experts and disabled_experts.</param>
/// <param name="Timeout">Deadline from submission (at most <see cref="MaxTimeout"/>); past it the request ends with finish
/// reason error and <see cref="TokenChunk.DeadlineExceeded"/>.</param>
public sealed record GenerationRequest(
    string RequestId,
    IReadOnlyList<int> PromptTokens,
    SamplingParams Sampling,
    RoutingOverride? Routing = null,
    TimeSpan? Timeout = null)
{
    /// <summary>W3C trace context of the caller's span (steps serving the request link to it); taken from
    /// <see cref="System.Diagnostics.Activity.Current"/> at submission when not given.</summary>
    public string? TraceParent { get; init; }

    /// <summary>The longest deadline a request may ask for (timers cannot be armed much further out).</summary>
    public static readonly TimeSpan MaxTimeout = TimeSpan.FromDays(1);
}
