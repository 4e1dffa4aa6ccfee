using Akka.Actor;
using MoeServer.Actors.Generation;
using MoeServer.Kernels.Generation;

namespace MoeServer.Actors.Scheduling;

/// <summary>Messages of the scheduler (router) actor. All stay on the gateway node.</summary>
public static class SchedulerProtocol
{
    /// <summary>A generation actor asks for its request to be scheduled; answered with <see cref="Admitted"/> or <see cref="Rejected"/>.</summary>
    public sealed record Submit(GenerationRequest Request, IActorRef Generation);

    public sealed record Admitted(string RequestId);

    public enum RejectionKind
    {
        Overloaded,
        Draining,
        Invalid,
    }

    public sealed record Rejected(string RequestId, RejectionKind Kind, string Reason);

    /// <summary>End a request early: client gone (cancelled) or deadline passed (error).</summary>
    public sealed record Cancel(string RequestId, FinishReason Reason, string? Error = null);

    /// <summary>The request's stream buffer is full: skip it in steps until <see cref="Resume"/> (its KV cache stays).</summary>
    public sealed record Pause(string RequestId);

    public sealed record Resume(string RequestId);

    /// <summary>Sent by the scheduler to a request's generation actor for every emitted chunk (the last one is final).</summary>
    public sealed record Emit(TokenChunk Chunk);

    public sealed record GetStats;

    /// <summary>Experts no new request may be routed to (set by operators, on every gateway); answered with
    /// <see cref="DisabledExpertsSet"/>.</summary>
    public sealed record SetDisabledExperts(IReadOnlySet<(int Layer, int Expert)> Disabled);

    public sealed record DisabledExpertsSet;

    /// <summary>Answered with <see cref="RequestList"/>: every request the scheduler holds, running first.</summary>
    public sealed record ListRequests;

    public sealed record RequestList(IReadOnlyList<RequestInfo> Requests);

    /// <summary>Record every step's routing from now on (a fresh trace); answered with <see cref="RoutingTraceStarted"/>.</summary>
    public sealed record StartRoutingTrace;

    public sealed record RoutingTraceStarted;

    /// <summary>Stop recording; answered with <see cref="RoutingTraceRecorded"/> (a failure when none was started).</summary>
    public sealed record StopRoutingTrace;

    public sealed record RoutingTraceRecorded(Kernels.Residency.RoutingTrace Trace);

    /// <summary>Stop taking requests; answered with <see cref="Drained"/> once nothing is waiting or running.</summary>
    public sealed record Drain;

    public sealed record Drained;
}

/// <summary>One request as the scheduler sees it: state is waiting, prefilling, decoding or paused.</summary>
public sealed record RequestInfo(string RequestId, string State, int PromptTokens, int Prefilled, int Generated, int MaxTokens, double AgeSeconds);

/// <summary>A snapshot of the scheduler.</summary>
public sealed record EngineStats(
    int Running,
    int Waiting,
    int Paused,
    long KvBytesReserved,
    long KvBytesBudget,
    long KvBytesAllocated,
    bool Draining,
    long CompletedRequests,
    long PromptTokens,
    long GeneratedTokens,
    StepTimings Timings);
