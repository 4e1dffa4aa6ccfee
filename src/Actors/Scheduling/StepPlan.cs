namespace MoeServer.Actors.Scheduling;

/// <summary>One step's work: per sequence the tokens to append (a prefill chunk or one decode token) and whether
/// the step must produce next-token logits for it (decode, or the last chunk of a prompt).</summary>
internal sealed record StepPlan(long StepId, IReadOnlyList<StepSegment> Segments)
{
    /// <summary>The decode rows' experts as known before the step (exact pre-gating or prediction).</summary>
    public PreGatePlan? PreGate { get; init; }

    public int TotalTokens => Segments.Sum(s => s.Tokens.Length);
}

internal sealed record StepSegment(SequenceState Sequence, int[] Tokens, bool NeedsLogits, bool IsPrefill);

/// <summary>What a step produced: logits rows for the segments that asked for them (in plan order) with the experts
/// each of those rows was routed to per layer, or an error.</summary>
internal sealed record StepResult(StepPlan Plan, float[]?[] Logits, int[][]?[] ExpertsByLayer, Exception? Error, StepTimings Timings);
