using MoeServer.Actors.Hosting;
using MoeServer.Gateway.Metrics;
using MoeServer.Gateway.OpenAi;
using MoeServer.Gateway.Options;

namespace MoeServer.Gateway.Serving;

/// <summary>What the API handlers (HTTP and SignalR) share: the served model, the runner and the options.</summary>
public sealed class ApiContext(ServedModel model, GenerationRunner runner, GatewayOptions options, NodeStatus status, ServerMetrics metrics)
{
    public ServedModel Model => model;
    public GenerationRunner Runner => runner;
    public GatewayOptions Options => options;
    public ServerMetrics Metrics => metrics;

    public GenerationPlanner Planner(Func<string, string> fieldName) => new(model.Config, fieldName);

    /// <summary>503 unless the node is up and its experts answered (the cheap check; /ready also pings them).</summary>
    public void EnsureReady()
    {
        var (ready, reason) = status.Readiness();
        if (!ready)
            throw new OpenAiException(StatusCodes.Status503ServiceUnavailable, $"The server is not ready: {reason}.", "service_unavailable", null, "not_ready");
    }
}
