using System.Diagnostics;

namespace MoeServer.Actors;

/// <summary>
/// OpenTelemetry spans of the engine: <c>moe.step</c> per model step on the gateway (linked to the requests in its
/// batch) and <c>moe.expert</c> per expert batch, as a child of its step, on whichever node runs the expert.
/// The step's context travels to remote experts inside <see cref="Experts.ExpertProtocol.RunBatch"/>.
/// Spans are only created while a listener (an exporter) is attached.
/// </summary>
public static class EngineTracing
{
    public const string SourceName = "MoeServer.Engine";
    public static ActivitySource Source { get; } = new(SourceName);

    /// <summary>W3C traceparent of the current activity, or null.</summary>
    public static string? CurrentTraceParent() => Activity.Current?.Id is { } id && Activity.Current.IdFormat == ActivityIdFormat.W3C ? id : null;

    public static Activity? StartExpertSpan(string? traceParent, string expert)
    {
        if (traceParent is null || !Source.HasListeners()) return null;
        if (!ActivityContext.TryParse(traceParent, null, isRemote: true, out var parent)) return null;
        var a = Source.StartActivity("moe.expert", ActivityKind.Server, parent);
        a?.SetTag("moe.expert", expert);
        return a;
    }
}
