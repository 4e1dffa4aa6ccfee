using MoeServer.Kernels.Model;
namespace MoeServer.Actors.Experts;

/// <summary>What the router and the expert entities say to each other (the only messages that cross nodes
/// during generation; see <see cref="Serialization.ExpertMessageSerializer"/>).</summary>
public static class ExpertProtocol
{
    /// <summary>One expert's rows of a step (rows grouped by expert). <paramref name="RequestIds"/> name the requests
    /// whose tokens are in the block, for log lines on the expert's node.</summary>
    /// <param name="TraceParent">W3C trace context of the step's span (null when traces are not collected).</param>
    public sealed record RunBatch(ExpertId Expert, long StepId, ActivationBlock Input, string[] RequestIds, string? TraceParent = null) : IWithExpertId;

    /// <summary>The expert's FFN output for the rows of <see cref="RunBatch"/>, in the same order, and how long the
    /// FFN itself took (the rest of the round trip is messaging and serialization).</summary>
    public sealed record BatchDone(ExpertId Expert, long StepId, ActivationBlock Output, double ComputeMs);

    /// <summary>The expert could not run the batch (e.g. its weights failed to load); not retried.</summary>
    public sealed record BatchFailed(ExpertId Expert, long StepId, string Reason);

    /// <summary>To every expert node's residency agent: the experts the router expects step <paramref name="StepId"/> to
    /// run, per layer (exact pre-gating: all layers; speculative gates: the next few; empty arrays elsewhere). A node
    /// plans for and may prefetch the ones it hosts; nothing is answered.</summary>
    public sealed record AnnounceStep(long StepId, int[][] ExpertsByLayer);

    /// <summary>Starts the entity (loading its weights) if needed and asks it to answer.</summary>
    public sealed record Ping(ExpertId Expert) : IWithExpertId;

    /// <summary>Answer to <see cref="Ping"/>: where the expert lives and whether its weights are loaded.</summary>
    public sealed record Pong(ExpertId Expert, string Node, bool Loaded, string? Error);
}
