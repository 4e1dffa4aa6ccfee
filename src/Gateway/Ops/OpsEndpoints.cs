using Akka.Actor;
using Akka.Cluster;
using MoeServer.Actors.Experts;
using MoeServer.Actors.Hosting;
using MoeServer.Actors.Ops;
using MoeServer.Kernels.Model;

namespace MoeServer.Gateway.Ops;

/// <summary>
/// The ops surface (<c>/ops/*</c>, JSON) that <c>moectl</c> talks to: this node's health, the cluster's members, every
/// expert node's cache (asked of each node's <see cref="OpsAgent"/>), where each expert lives, expert actions on the
/// node hosting the expert, and the gateway's requests. Guarded by <see cref="OpsAccess"/>.
/// </summary>
internal static class OpsEndpoints
{
    public sealed record Member(string Address, string Status, string[] Roles, bool Reachable, bool Self, bool Leader);
    public sealed record ClusterView(string Self, string? Leader, IReadOnlyList<Member> Members);
    public sealed record NodeAnswer(string Address, OpsProtocol.NodeReport? Report, string? Error);
    public sealed record Placement(string Expert, string? Node, bool Resident, bool Pinned, string? Error);

    public static IEndpointRouteBuilder MapOps(this IEndpointRouteBuilder app)
    {
        var ops = app.MapGroup("/ops");
        ops.MapGet("/health", async (MoeNodeRuntime runtime, ActorSystem system, OpsOptions o) =>
            Results.Json(await AskNodeAsync(system, Cluster.Get(system).SelfAddress, o.AskTimeout).ConfigureAwait(false)));
        ops.MapGet("/cluster", (ActorSystem system) => Results.Json(View(Cluster.Get(system))));
        ops.MapGet("/nodes", async (ActorSystem system, OpsOptions o) => Results.Json(await AskAllAsync(system, null, o.AskTimeout).ConfigureAwait(false)));
        ops.MapGet("/experts/cache", async (ActorSystem system, OpsOptions o) =>
            Results.Json(await AskAllAsync(system, NodeRoles.ExpertRole, o.AskTimeout).ConfigureAwait(false)));
        ops.MapGet("/experts/placement", PlacementAsync);
        ops.MapPost("/experts/{expert}/{action}", ExpertActionAsync);
        ops.MapGet("/requests", async (MoeNodeRuntime runtime) => runtime.Engine is { } engine
            ? Results.Json(await engine.ListRequestsAsync().ConfigureAwait(false))
            : NotGateway(runtime));
        ops.MapPost("/requests/{id}/cancel", async (string id, MoeNodeRuntime runtime) =>
        {
            if (runtime.Engine is not { } engine) return NotGateway(runtime);
            return await engine.CancelRequestAsync(id, "cancelled by an operator").ConfigureAwait(false)
                ? Results.Json(new OpsProtocol.ActionDone(true, $"request {id} cancelled"))
                : OpsResults.Error(StatusCodes.Status404NotFound, "unknown_request", $"no request {id} is running or waiting on this gateway");
        });
        return app;
    }

    private static IResult NotGateway(MoeNodeRuntime runtime) => OpsResults.Error(StatusCodes.Status404NotFound, "not_a_gateway",
        $"{runtime.Status.Address} runs no gateway (role {runtime.Status.Role.ToString().ToLowerInvariant()}): ask a gateway node for requests");

    private static ClusterView View(Cluster cluster)
    {
        var state = cluster.State;
        var members = state.Members.Select(m => new Member(m.Address.ToString(), m.Status.ToString(), m.Roles.Order().ToArray(),
            !state.Unreachable.Contains(m), m.Address == cluster.SelfAddress, m.Address == state.Leader)).ToList();
        return new ClusterView(cluster.SelfAddress.ToString(), state.Leader?.ToString(), members);
    }

    private static async Task<NodeAnswer> AskNodeAsync(ActorSystem system, Address address, TimeSpan timeout)
    {
        try
        {
            var report = await OpsAgent.On(system, address).Ask<OpsProtocol.NodeReport>(new OpsProtocol.GetNodeReport(), timeout).ConfigureAwait(false);
            return new NodeAnswer(address.ToString(), report, null);
        }
        catch (Exception ex) when (ex is AskTimeoutException or TaskCanceledException)
        {
            return new NodeAnswer(address.ToString(), null, $"no answer within {timeout.TotalSeconds:0.#} s");
        }
    }

    /// <summary>Every member that is up (with <paramref name="role"/>, when given), asked at once.</summary>
    private static async Task<IReadOnlyList<NodeAnswer>> AskAllAsync(ActorSystem system, string? role, TimeSpan timeout)
    {
        var members = Cluster.Get(system).State.Members
            .Where(m => m.Status is MemberStatus.Up or MemberStatus.WeaklyUp && (role is null || m.HasRole(role)))
            .Select(m => m.Address).ToList();
        return await Task.WhenAll(members.Select(a => AskNodeAsync(system, a, timeout))).ConfigureAwait(false);
    }

    private static async Task<IResult> PlacementAsync(MoeNodeRuntime runtime, ActorSystem system, OpsOptions o)
    {
        var nodes = (await AskAllAsync(system, NodeRoles.ExpertRole, o.AskTimeout).ConfigureAwait(false))
            .Where(n => n.Report?.Residency is not null).ToDictionary(n => n.Address, n => n.Report!.Residency!);
        var experts = ExpertPinger.AllExperts(runtime.Config).ToList();
        var pongs = await Task.WhenAll(experts.Select(e => PingAsync(runtime, e, o.AskTimeout))).ConfigureAwait(false);
        var rows = experts.Select((e, i) =>
        {
            var (node, error) = pongs[i];
            var r = node is null ? null : nodes.GetValueOrDefault(node);
            return new Placement(e.EntityId, node, r?.Resident.Contains(e.EntityId) == true, r?.Pinned.Contains(e.EntityId) == true, error);
        }).ToList();
        return Results.Json(rows);
    }

    /// <summary>Where an expert's entity answers from (pinging starts it if needed).</summary>
    private static async Task<(string? Node, string? Error)> PingAsync(MoeNodeRuntime runtime, ExpertId expert, TimeSpan timeout)
    {
        if (runtime.ExpertRegion is not { } region) return (null, "this node has no expert region yet");
        try
        {
            var pong = await region.Ask<ExpertProtocol.Pong>(new ExpertProtocol.Ping(expert), timeout).ConfigureAwait(false);
            return (pong.Node, pong.Error);
        }
        catch (Exception ex) when (ex is AskTimeoutException or TaskCanceledException)
        {
            return (null, $"expert {expert} did not answer within {timeout.TotalSeconds:0.#} s");
        }
    }

    private static async Task<IResult> ExpertActionAsync(string expert, string action, MoeNodeRuntime runtime, ActorSystem system, OpsOptions o)
    {
        if (action is not ("pin" or "unpin" or "evict"))
            return OpsResults.Error(StatusCodes.Status400BadRequest, "unknown_action", $"unknown expert action '{action}' (pin, unpin or evict)");
        ExpertId id;
        try
        {
            id = ExpertId.Parse(expert);
        }
        catch (FormatException ex)
        {
            return OpsResults.Error(StatusCodes.Status400BadRequest, "bad_expert", ex.Message);
        }
        if (!ExpertPinger.AllExperts(runtime.Config).Contains(id))
            return OpsResults.Error(StatusCodes.Status404NotFound, "unknown_expert",
                $"expert {id} does not exist: the model has {runtime.Config.NumLayers} layers of {runtime.Config.NumExperts} experts (sparse layers only)");
        var (node, error) = await PingAsync(runtime, id, o.AskTimeout).ConfigureAwait(false);
        if (node is null) return OpsResults.Error(StatusCodes.Status503ServiceUnavailable, "expert_unavailable", error ?? $"expert {id} is not hosted anywhere");
        try
        {
            var done = await OpsAgent.On(system, Address.Parse(node)).Ask<OpsProtocol.ActionDone>(new OpsProtocol.ExpertAction(action, id.EntityId), o.AskTimeout)
                .ConfigureAwait(false);
            return done.Ok ? Results.Json(done) : OpsResults.Error(StatusCodes.Status409Conflict, "action_refused", done.Message);
        }
        catch (Exception ex) when (ex is AskTimeoutException or TaskCanceledException)
        {
            return OpsResults.Error(StatusCodes.Status504GatewayTimeout, "node_timeout", $"{node} did not answer within {o.AskTimeout.TotalSeconds:0.#} s");
        }
    }
}
