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
        ops.MapGet("/experts/stats", StatsAsync);
        ops.MapPost("/cluster/{action}", ClusterActionAsync);
        ops.MapGet("/log", (RecentLogs logs, string? level, int? count) =>
        {
            if (!Enum.TryParse<LogLevel>(Normalize(level ?? "information"), ignoreCase: true, out var min) || min == LogLevel.None)
                return OpsResults.Error(StatusCodes.Status400BadRequest, "bad_level", $"unknown log level '{level}' (trace, debug, info, warn, error, critical)");
            return Results.Json(logs.Peek(min, Math.Clamp(count ?? 50, 1, 2000)));
        });
        ops.MapGet("/actors", ActorTreeAsync);
        ops.MapGet("/cluster/events", ClusterEventsAsync);
        ops.MapGet("/sharding/regions", RegionsAsync);
        ops.MapGet("/sharding/stats", ShardingStatsAsync);
        ops.MapGet("/sharding/locate/{entity}", LocateAsync);
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
        if (action is not ("pin" or "unpin" or "evict" or "disable" or "enable"))
            return OpsResults.Error(StatusCodes.Status400BadRequest, "unknown_action", $"unknown expert action '{action}' (pin, unpin, evict, disable or enable)");
        if (BadExpert(expert, runtime, out var id) is { } bad) return bad;
        if (action is "disable" or "enable")
        {
            // Cluster-wide: every gateway routes new requests without (or with) the expert.
            var gateways = Cluster.Get(system).State.Members.Where(m => m.Status == MemberStatus.Up && m.HasRole(NodeRoles.GatewayRole)).ToList();
            var answers = await Task.WhenAll(gateways.Select(async m =>
            {
                try
                {
                    return await OpsAgent.On(system, m.Address).Ask<OpsProtocol.ActionDone>(new OpsProtocol.SetExpertEnabled(id.EntityId, action == "enable"), o.AskTimeout)
                        .ConfigureAwait(false);
                }
                catch (Exception ex) when (ex is AskTimeoutException or TaskCanceledException)
                {
                    return new OpsProtocol.ActionDone(false, $"{m.Address} did not answer within {o.AskTimeout.TotalSeconds:0.#} s");
                }
            })).ConfigureAwait(false);
            var failed = answers.Where(a => !a.Ok).ToList();
            return failed.Count == 0
                ? Results.Json(new OpsProtocol.ActionDone(true, $"expert {id} {action}d for new requests on {answers.Length} gateway(s)"))
                : OpsResults.Error(StatusCodes.Status409Conflict, "action_refused", string.Join("; ", failed.Select(f => f.Message)));
        }
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

    /// <summary>Tokens routed per expert and layer, summed over every gateway, and the experts disabled.</summary>
    private static async Task<IResult> StatsAsync(ActorSystem system, OpsOptions o)
    {
        var gateways = Cluster.Get(system).State.Members.Where(m => m.Status == MemberStatus.Up && m.HasRole(NodeRoles.GatewayRole)).ToList();
        var stats = await Task.WhenAll(gateways.Select(m => OpsAgent.On(system, m.Address)
            .Ask<OpsProtocol.RoutingStats>(new OpsProtocol.GetRoutingStats(), o.AskTimeout))).ConfigureAwait(false);
        var withData = stats.Where(s => s.Routed.Length > 0).ToList();
        if (withData.Count == 0) return OpsResults.Error(StatusCodes.Status503ServiceUnavailable, "no_gateway", "no gateway node is up to report routing");
        int layers = withData[0].Routed.Length, experts = withData[0].Routed[0].Length;
        var routed = Enumerable.Range(0, layers).Select(l => Enumerable.Range(0, experts).Select(e => withData.Sum(s => s.Routed[l][e])).ToArray()).ToArray();
        return Results.Json(new { gateways = withData.Select(s => s.Address).ToArray(), routed, disabled = withData.SelectMany(s => s.Disabled).Distinct().Order().ToArray() });
    }

    /// <summary>leave / down / join ADDR, down-unreachable: membership changes through this node's cluster extension.</summary>
    private static async Task<IResult> ClusterActionAsync(string action, string? address, ActorSystem system, OpsOptions o)
    {
        var cluster = Cluster.Get(system);
        var state = cluster.State;
        if (action == "down-unreachable")
        {
            var unreachable = state.Unreachable.Select(m => m.Address).ToList();
            foreach (var a in unreachable) cluster.Down(a);
            return Results.Json(new OpsProtocol.ActionDone(true, unreachable.Count == 0
                ? "no member is unreachable"
                : $"downed {unreachable.Count} unreachable member(s): {string.Join(", ", unreachable)}"));
        }
        if (action is not ("leave" or "down" or "join"))
            return OpsResults.Error(StatusCodes.Status400BadRequest, "unknown_action", $"unknown cluster action '{action}' (leave, down, join, down-unreachable)");
        if (string.IsNullOrWhiteSpace(address))
            return OpsResults.Error(StatusCodes.Status400BadRequest, "missing_address", $"cluster {action} needs a member address (akka.tcp://SYSTEM@HOST:PORT)");
        if (BadAddress(address, out var target) is { } bad) return bad;
        if (action == "join")
        {
            // Through the checkpoint guard: the other cluster's checkpoint must match this node's.
            try
            {
                var started = await system.ActorSelection($"/user/{Actors.Cluster.CheckpointGuard.Name}")
                    .Ask<Actors.Cluster.CheckpointProtocol.JoinStarted>(new Actors.Cluster.CheckpointProtocol.JoinVia(target.ToString()), o.AskTimeout).ConfigureAwait(false);
                return Results.Json(new OpsProtocol.ActionDone(true, started.Message));
            }
            catch (Exception ex) when (ex is InvalidOperationException or ArgumentException)
            {
                return OpsResults.Error(StatusCodes.Status409Conflict, "action_refused", ex.Message);
            }
        }
        if (!state.Members.Any(m => m.Address == target))
            return OpsResults.Error(StatusCodes.Status404NotFound, "unknown_member",
                $"{target} is not a member of the cluster (members: {string.Join(", ", state.Members.Select(m => m.Address))})");
        if (action == "leave") cluster.Leave(target);
        else cluster.Down(target);
        return Results.Json(new OpsProtocol.ActionDone(true, $"{target} {(action == "leave" ? "asked to leave" : "marked down")}"));
    }

    private static async Task<IResult> RegionsAsync(MoeNodeRuntime runtime, OpsOptions o)
    {
        if (runtime.ExpertRegion is not { } region) return OpsResults.Error(StatusCodes.Status503ServiceUnavailable, "no_region", "the expert region has not started");
        try
        {
            var regions = await region.Ask<Akka.Cluster.Sharding.CurrentRegions>(Akka.Cluster.Sharding.GetCurrentRegions.Instance, o.AskTimeout).ConfigureAwait(false);
            return Results.Json(new { typeName = "experts", regions = regions.Regions.Select(a => a.ToString()).Order().ToArray() });
        }
        catch (Exception ex) when (ex is AskTimeoutException or TaskCanceledException)
        {
            return ShardingSilent(o);
        }
    }

    /// <summary>Per region (node) its shards and how many expert entities each holds now.</summary>
    private static async Task<IResult> ShardingStatsAsync(MoeNodeRuntime runtime, OpsOptions o)
    {
        if (runtime.ExpertRegion is not { } region) return OpsResults.Error(StatusCodes.Status503ServiceUnavailable, "no_region", "the expert region has not started");
        Akka.Cluster.Sharding.ClusterShardingStats stats;
        try
        {
            stats = await region.Ask<Akka.Cluster.Sharding.ClusterShardingStats>(new Akka.Cluster.Sharding.GetClusterShardingStats(o.AskTimeout), o.AskTimeout + o.AskTimeout)
                .ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is AskTimeoutException or TaskCanceledException)
        {
            return ShardingSilent(o);
        }
        return Results.Json(stats.Regions.OrderBy(r => r.Key.ToString()).Select(r => new
        {
            region = r.Key.ToString(),
            shards = r.Value.Stats.Count,
            entities = r.Value.Stats.Values.Sum(),
            perShard = r.Value.Stats.OrderBy(s => s.Key, StringComparer.Ordinal).ToDictionary(s => s.Key, s => s.Value),
            failed = r.Value.Failed.Order().ToArray(),
        }).ToArray());
    }

    /// <summary>A 400 when <paramref name="text"/> is not "layer.expert", a 404 when the model has no such expert, else null.</summary>
    private static IResult? BadExpert(string text, MoeNodeRuntime runtime, out ExpertId id)
    {
        try
        {
            id = ExpertId.Parse(text);
        }
        catch (FormatException ex)
        {
            id = default;
            return OpsResults.Error(StatusCodes.Status400BadRequest, "bad_expert", ex.Message);
        }
        return ExpertPinger.AllExperts(runtime.Config).Contains(id)
            ? null
            : OpsResults.Error(StatusCodes.Status404NotFound, "unknown_expert",
                $"expert {id} does not exist: the model has {runtime.Config.NumLayers} layers of {runtime.Config.NumExperts} experts (sparse layers only)");
    }

    /// <summary>A 400 when <paramref name="text"/> is not an Akka address, else null.</summary>
    private static IResult? BadAddress(string text, out Address address)
    {
        try
        {
            address = Address.Parse(text);
            return null;
        }
        catch (Exception ex) when (ex is UriFormatException or ArgumentException or FormatException)
        {
            address = null!;
            return OpsResults.Error(StatusCodes.Status400BadRequest, "bad_address", $"'{text}' is not an Akka address (akka.tcp://SYSTEM@HOST:PORT): {ex.Message}");
        }
    }

    private static IResult ShardingSilent(OpsOptions o) => OpsResults.Error(StatusCodes.Status504GatewayTimeout, "sharding_timeout",
        $"the shard coordinator did not answer within {o.AskTimeout.TotalSeconds:0.#} s (is the cluster changing membership?)");

    /// <summary>Where an expert entity lives: its shard and the node hosting it (pinging starts it if needed).</summary>
    private static async Task<IResult> LocateAsync(string entity, MoeNodeRuntime runtime, OpsOptions o)
    {
        if (BadExpert(entity, runtime, out var id) is { } bad) return bad;
        var (node, error) = await PingAsync(runtime, id, o.AskTimeout).ConfigureAwait(false);
        var shard = new ExpertMessageExtractor(runtime.Settings.Experts.NumberOfShards).ShardId(id.EntityId, new ExpertProtocol.Ping(id));
        return node is null
            ? OpsResults.Error(StatusCodes.Status503ServiceUnavailable, "expert_unavailable", error ?? $"expert {id} did not answer")
            : Results.Json(new { entity = id.EntityId, shard, node, error });
    }

    private static string Normalize(string level) => level.ToLowerInvariant() switch
    {
        "info" => "Information",
        "warn" or "warning" => "Warning",
        "crit" or "fatal" => "Critical",
        var l => l,
    };

    /// <summary>The actor tree of a node (this one, or <paramref name="node"/>) to <paramref name="depth"/> levels.</summary>
    private static async Task<IResult> ActorTreeAsync(ActorSystem system, OpsOptions o, int? depth, string? node)
    {
        var target = Cluster.Get(system).SelfAddress;
        if (!string.IsNullOrWhiteSpace(node) && BadAddress(node, out target) is { } bad) return bad;
        try
        {
            var tree = await OpsAgent.On(system, target).Ask<OpsProtocol.ActorTree>(new OpsProtocol.GetActorTree(Math.Clamp(depth ?? 3, 1, 8)), o.AskTimeout + o.AskTimeout)
                .ConfigureAwait(false);
            return Results.Json(tree);
        }
        catch (Exception ex) when (ex is AskTimeoutException or TaskCanceledException)
        {
            return OpsResults.Error(StatusCodes.Status504GatewayTimeout, "node_timeout", $"{target} did not answer within {(o.AskTimeout + o.AskTimeout).TotalSeconds:0.#} s");
        }
    }

    /// <summary>Membership and reachability events as server-sent events (the current members first) until the client goes.</summary>
    private static async Task ClusterEventsAsync(HttpContext ctx, ActorSystem system)
    {
        ctx.Response.ContentType = "text/event-stream";
        ctx.Response.Headers.CacheControl = "no-cache";
        var events = System.Threading.Channels.Channel.CreateUnbounded<ClusterEventLine>();
        var listener = system.ActorOf(Props.Create(() => new ClusterEventListener(events.Writer)));
        try
        {
            await ctx.Response.Body.FlushAsync(ctx.RequestAborted).ConfigureAwait(false);
            await foreach (var e in events.Reader.ReadAllAsync(ctx.RequestAborted).ConfigureAwait(false))
            {
                await ctx.Response.WriteAsync("data: " + System.Text.Json.JsonSerializer.Serialize(e, EventJson) + "\n\n", ctx.RequestAborted).ConfigureAwait(false);
                await ctx.Response.Body.FlushAsync(ctx.RequestAborted).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException)
        {
            // the operator pressed Ctrl+C
        }
        finally
        {
            system.Stop(listener);
        }
    }

    private static readonly System.Text.Json.JsonSerializerOptions EventJson = new(System.Text.Json.JsonSerializerDefaults.Web);
}
