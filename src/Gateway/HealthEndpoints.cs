using Microsoft.AspNetCore.Diagnostics.HealthChecks;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using MoeServer.Actors.Hosting;

namespace MoeServer.Gateway;

/// <summary>
/// /health (liveness: 200 while the process runs, with the node's role and phase) and /ready (200 when
/// <see cref="NodeStatus.Readiness"/> says the node serves, else 503 with the reason). Every node serves both,
/// expert-only nodes included.
/// </summary>
internal static class HealthEndpoints
{
    public const string ReadyTag = "ready";

    private sealed record Liveness(string Status, string Role, string Phase);
    private sealed record Ready(string Status, string Reason, IReadOnlyList<ClusterNode> Nodes);
    private sealed record NotReady(string Status, string Reason, IReadOnlyList<ClusterNode> Nodes);
    /// <summary>A cluster member as this node sees it: what /ready reports beside its own answer.</summary>
    private sealed record ClusterNode(string Address, IReadOnlyList<string> Roles, string Status, bool Reachable, bool Self);

    public static IServiceCollection AddNodeHealthChecks(this IServiceCollection services)
    {
        services.AddHealthChecks().AddCheck<NodeReadinessCheck>("node", tags: [ReadyTag]);
        return services;
    }

    public static IEndpointRouteBuilder MapNodeHealthEndpoints(this IEndpointRouteBuilder app)
    {
        // Liveness runs no checks: the process answering is the answer.
        app.MapHealthChecks("/health", new HealthCheckOptions { Predicate = _ => false, ResponseWriter = WriteLiveness });
        app.MapHealthChecks("/ready", new HealthCheckOptions
        {
            Predicate = c => c.Tags.Contains(ReadyTag),
            ResponseWriter = WriteReadiness,
        });
        return app;
    }

    private static Task WriteLiveness(HttpContext context, HealthReport report)
    {
        var status = context.RequestServices.GetRequiredService<NodeStatus>();
        return context.Response.WriteAsJsonAsync(new Liveness("ok", Lower(status.Role), Lower(status.Phase)));
    }

    private static Task WriteReadiness(HttpContext context, HealthReport report)
    {
        var nodes = Members(context.RequestServices);
        if (report.Status == HealthStatus.Healthy)
        {
            string note = string.Join("; ", report.Entries.Values.Select(e => e.Description).Where(d => !string.IsNullOrEmpty(d)));
            return context.Response.WriteAsJsonAsync(new Ready("ready", note.Length == 0 ? "ready" : note, nodes));
        }
        string reason = string.Join("; ", report.Entries.Values
            .Where(e => e.Status != HealthStatus.Healthy)
            .Select(e => e.Description ?? e.Exception?.Message ?? e.Status.ToString()));
        return context.Response.WriteAsJsonAsync(new NotReady("not_ready", reason, nodes));
    }

    /// <summary>Every cluster member this node knows of (empty before the ActorSystem is up).</summary>
    private static IReadOnlyList<ClusterNode> Members(IServiceProvider services)
    {
        if (services.GetService<Akka.Actor.ActorSystem>() is not { } system || system.WhenTerminated.IsCompleted) return [];
        var cluster = Akka.Cluster.Cluster.Get(system);
        var state = cluster.State;
        return state.Members
            .Select(m => new ClusterNode(m.Address.ToString(), m.Roles.OrderBy(r => r, StringComparer.Ordinal).ToList(),
                Lower(m.Status), !state.Unreachable.Contains(m), m.Address == cluster.SelfAddress))
            .ToList();
    }

    private static string Lower<T>(T value) where T : struct, Enum => value.ToString().ToLowerInvariant();
}

/// <summary>Readiness of this node as a health check (tag "ready").</summary>
/// <remarks>On a gateway, once the node is up and warmed up, every expert must also answer a ping (so /ready goes back
/// to 503 when expert nodes are gone).</remarks>
internal sealed class NodeReadinessCheck(NodeStatus status, ExpertReadinessProbe? experts = null) : IHealthCheck
{
    public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        var (ready, reason) = status.Readiness();
        if (ready && status.Role.RunsGateway() && experts is not null) (ready, reason) = await experts.CheckAsync().ConfigureAwait(false);
        return ready ? HealthCheckResult.Healthy(reason) : HealthCheckResult.Unhealthy(reason);
    }
}
