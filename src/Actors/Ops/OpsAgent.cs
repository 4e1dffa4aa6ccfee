using Akka.Actor;
using Akka.Hosting;
using MoeServer.Actors.Experts;
using MoeServer.Actors.Hosting;
using MoeServer.Kernels.Model;
using static MoeServer.Actors.Ops.OpsProtocol;

namespace MoeServer.Actors.Ops;

/// <summary>
/// One per node, at <c>/user/ops-agent</c>: reports the node (role, phase, its expert cache) and carries out expert
/// actions on it (pin, unpin, evict) for the ops surface, which may run on another node.
/// </summary>
public sealed class OpsAgent : ReceiveActor
{
    public const string Name = "ops-agent";

    public OpsAgent(MoeNodeRuntime runtime)
    {
        Receive<GetNodeReport>(_ => Sender.Tell(Report(runtime)));
        Receive<ExpertAction>(m => Sender.Tell(Act(runtime, m)));
        Receive<GetRoutingStats>(_ => Sender.Tell(Routing(runtime)));
        // Piped, not awaited: the agent stays responsive while the walk runs (it must answer its own Identify).
        Receive<GetActorTree>(m => WalkAsync(Context.System, m.Depth)
            .PipeTo(Sender, success: paths => new ActorTree(runtime.Status.Address, paths)));
        Receive<SetExpertEnabled>(m => SetEnabledAsync(runtime, m).PipeTo(Sender));
    }

    public static Props PropsFor(MoeNodeRuntime runtime) => Props.Create(() => new OpsAgent(runtime));

    public static ActorSelection On(ActorSystem system, Address address) =>
        system.ActorSelection(new RootActorPath(address) / "user" / Name);

    private static NodeReport Report(MoeNodeRuntime runtime)
    {
        var status = runtime.Status;
        var (ready, detail) = status.Readiness();
        return new NodeReport(status.Address, status.Role.ToString().ToLowerInvariant(), ready ? "Ready" : status.Phase.ToString(), detail, status.Fingerprint,
            runtime.ExpertResidency is { } r ? Residency(r) : null);
    }

    private static ResidencyReport Residency(ExpertResidency r)
    {
        var s = r.Stats();
        return new ResidencyReport(r.Capacity, r.ExpertBytes, r.Options.Policy, r.Options.Tier.ToString().ToLowerInvariant(),
            r.Resident().Select(e => e.EntityId).ToArray(), r.Pinned().Select(e => e.EntityId).ToArray(), s.Uses, s.Hits, s.HitRate,
            s.DemandLoads, s.PrefetchLoads, s.PrefetchHits, s.Evictions, r.Counters.BytesLoaded, r.Counters.StallTime.TotalSeconds);
    }

    /// <summary>Actor paths level by level under /user and /system/sharding: every level's children are identified at
    /// once (wildcard selections), answers collected for a short while.</summary>
    private static async Task<string[]> WalkAsync(ActorSystem system, int depth)
    {
        var found = new SortedSet<string>(StringComparer.Ordinal) { "/user", "/system/sharding" };
        var frontier = new List<string>(found);
        for (int level = 0; level < depth && frontier.Count > 0; level++)
        {
            var inbox = Inbox.Create(system);
            foreach (var path in frontier) system.ActorSelection(path + "/*").Tell(new Identify(path), inbox.Receiver);
            var next = new List<string>();
            // A level ends when nothing new came for a while (entities answer from a busy compute thread), or at a cap.
            var cap = DateTime.UtcNow + TimeSpan.FromSeconds(2);
            while (DateTime.UtcNow < cap)
            {
                object reply;
                try
                {
                    var quiet = TimeSpan.FromMilliseconds(500);
                    var left = cap - DateTime.UtcNow;
                    reply = await inbox.ReceiveAsync(left < quiet ? left : quiet).ConfigureAwait(false);
                }
                catch (TimeoutException)
                {
                    break;
                }
                if (reply is ActorIdentity { Subject: { } child } && found.Add(child.Path.ToStringWithoutAddress()))
                    next.Add(child.Path.ToStringWithoutAddress());
            }
            inbox.Dispose();
            frontier = next;
        }
        return found.ToArray();
    }

    private static RoutingStats Routing(MoeNodeRuntime runtime)
    {
        if (runtime.Engine is not { } engine) return new RoutingStats(runtime.Status.Address, [], []);
        var g = engine.Gauges;
        var routed = Enumerable.Range(0, g.NumLayers).Select(l => Enumerable.Range(0, g.NumExperts).Select(e => g.RoutedTokens(l, e)).ToArray()).ToArray();
        return new RoutingStats(runtime.Status.Address, routed, engine.DisabledExperts.Select(e => e.EntityId).ToArray());
    }

    private static async Task<ActionDone> SetEnabledAsync(MoeNodeRuntime runtime, SetExpertEnabled m)
    {
        if (runtime.Engine is not { } engine) return new ActionDone(false, $"{runtime.Status.Address} runs no gateway");
        try
        {
            var id = ExpertId.Parse(m.Expert);
            await engine.SetExpertEnabledAsync(id, m.Enabled).ConfigureAwait(false);
            return new ActionDone(true, $"expert {id} {(m.Enabled ? "enabled" : "disabled")} for new requests on {runtime.Status.Address}");
        }
        catch (Exception ex) when (ex is FormatException or ArgumentException)
        {
            return new ActionDone(false, ex.Message);
        }
    }

    private static ActionDone Act(MoeNodeRuntime runtime, ExpertAction m)
    {
        if (runtime.ExpertResidency is not { } r) return new ActionDone(false, $"{runtime.Status.Address} hosts no experts");
        ExpertId id;
        try
        {
            id = ExpertId.Parse(m.Expert);
        }
        catch (FormatException ex)
        {
            return new ActionDone(false, ex.Message);
        }
        if (!r.Hosts(id)) return new ActionDone(false, $"expert {id} is not hosted on {runtime.Status.Address}");
        try
        {
            switch (m.Action)
            {
                case "pin":
                    r.Pin(id, "operator");
                    return new ActionDone(true, $"expert {id} pinned on {runtime.Status.Address}");
                case "unpin":
                    r.Unpin(id);
                    return new ActionDone(true, $"expert {id} unpinned on {runtime.Status.Address}");
                case "evict":
                    return r.Evict(id)
                        ? new ActionDone(true, $"expert {id} evicted on {runtime.Status.Address}")
                        : new ActionDone(false, $"expert {id} is not resident, pinned or in use on {runtime.Status.Address}: not evicted");
                default:
                    return new ActionDone(false, $"unknown expert action '{m.Action}' (pin, unpin or evict)");
            }
        }
        catch (Exception ex)
        {
            return new ActionDone(false, $"expert {id} on {runtime.Status.Address}: {ex.Message}");
        }
    }
}

public static class OpsAgentRegistration
{
    /// <summary>Starts the node's ops agent.</summary>
    public static AkkaConfigurationBuilder AddOpsAgent(this AkkaConfigurationBuilder builder, MoeNodeRuntime runtime) =>
        builder.WithActors((system, registry) => registry.Register<OpsAgent>(system.ActorOf(OpsAgent.PropsFor(runtime), OpsAgent.Name)));
}
