using Akka.Actor;
using Akka.Cluster.Hosting;
using Akka.Cluster.Sharding;
using Akka.Configuration;
using Akka.Event;
using Akka.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using MoeServer.Actors.Cluster;
using MoeServer.Actors.Compute;
using MoeServer.Actors.Experts;
using MoeServer.Actors.Generation;
using MoeServer.Actors.Ops;
using MoeServer.Actors.Scheduling;
using MoeServer.Actors.Serialization;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Formats;
using MoeServer.Kernels.Model;
using MoeServer.Kernels.Tokenization;

namespace MoeServer.Actors.Hosting;

public static class MoeNodeHostingExtensions
{
    /// <summary>
    /// Registers a whole node of the given settings: the ActorSystem (remoting, cluster, split brain resolver), the
    /// expert shard region (hosting entities on expert roles, a proxy on gateway-only nodes), the checkpoint guard
    /// that joins the cluster, and on gateway roles the backbone model, the scheduler and <see cref="MoeEngine"/>.
    /// </summary>
    public static IServiceCollection AddMoeNode(this IServiceCollection services, MoeSettings settings,
        Action<string>? progress = null)
    {
        var node = settings.Node;
        if (string.IsNullOrWhiteSpace(node.ModelDir)) throw new ArgumentException("no model directory: set --model or moe.node.model");
        var cfg = ModelConfig.Load(node.ModelDir);
        var status = new NodeStatus(node.Role) { Fingerprint = CheckpointFingerprint.Compute(node.ModelDir) };
        var runtime = new MoeNodeRuntime(settings, cfg, status.Fingerprint, status);

        if (node.Role.RunsGateway())
        {
            var device = ComputeDevice.Parse(node.Device);
            progress?.Invoke($"loading backbone of {node.ModelDir} onto {node.Device}");
            runtime.Model = MoeModel.Load(node.ModelDir, node.Precision, null, WeightSet.Backbone, device);
            runtime.Tokenizer = ModelTokenizer.Load(node.ModelDir);
        }
        long expertBytes = 3L * cfg.ExpertIntermediateSize * cfg.HiddenSize * (node.Precision == WeightPrecision.BF16 ? 2 : 4);
        if (node.Role.RunsExperts())
        {
            runtime.ExpertWeights = new ExpertWeightSource(node.ModelDir, node.Precision, node.Device);
            runtime.ExpertWork = new ExpertWorkCounters(cfg.NumLayers, cfg.NumExperts);
            runtime.ExpertResidency = new ExpertResidency(runtime.ExpertWeights, settings.Experts.Residency, expertBytes);
        }
        if (node.Role.RunsGateway() && settings.Experts.Failover.Local)
        {
            // Its own view of the mapped checkpoint: weights are read only when an expert's node stops answering.
            runtime.FailoverWeights = new ExpertWeightSource(node.ModelDir, node.Precision, node.Device);
            runtime.ExpertFailover = new ExpertFailover(
                new ExpertResidency(runtime.FailoverWeights, settings.Experts.Failover.Budget, expertBytes), settings.Experts.Failover.ProbeInterval);
        }

        // One frame must carry the largest expert batch: every row of a full step going to one expert.
        long frame = Math.Max(256 * 1024,
            (long)settings.Scheduler.MaxBatchTokens * cfg.HiddenSize * sizeof(float) + 4 * ExpertMessageSerializer.EnvelopeHeadroom);
        runtime.MaxFrameBytes = frame;
        var derived = ConfigurationFactory.ParseString($$"""
            akka.remote.dot-netty.tcp {
              hostname = "{{node.Hostname}}"
              port = {{node.ClusterPort}}
              maximum-frame-size = {{frame}}b
              send-buffer-size = {{frame * 2}}b
              receive-buffer-size = {{frame * 2}}b
            }
            akka.cluster.roles = [{{string.Join(",", node.Role.ClusterRoles())}}]
            akka.cluster.seed-nodes = []
            """);
        var hocon = derived.WithFallback(settings.Hocon);

        services.AddSingleton(runtime);
        services.AddSingleton(status);
        services.AddSingleton(settings);
        services.AddSingleton(_ => runtime.Engine ?? throw new InvalidOperationException("this node runs no gateway role, or has not started"));
        services.AddAkka(node.SystemName, (builder, sp) =>
        {
            builder.AddHocon(hocon, HoconAddMode.Prepend);
            builder.ConfigureLoggers(l =>
            {
                l.ClearLoggers();
                l.AddLoggerFactory();
            });
            var extractor = new ExpertMessageExtractor(settings.Experts.NumberOfShards);
            if (node.Role.RunsExperts())
            {
                var residency = runtime.ExpertResidency!;
                builder.WithShardRegion<ExpertRegion>("experts", id => ExpertEntity.PropsFor(id, residency, runtime.ExpertWork!), extractor,
                    new ShardOptions
                    {
                        Role = NodeRoles.ExpertRole,
                        StateStoreMode = StateStoreMode.DData,
                        RememberEntities = false,
                        PassivateIdleEntityAfter = TimeSpan.Zero,
                        ShouldPassivateIdleEntities = false,
                    });
                builder.AddExpertResidencyAgent(residency);
            }
            else
            {
                builder.WithShardRegionProxy<ExpertRegion>("experts", NodeRoles.ExpertRole, extractor);
            }
            builder.AddOpsAgent(runtime);
            builder.WithActors((system, registry) =>
            {
                status.Address = ((ExtendedActorSystem)system).Provider.DefaultAddress.ToString();
                var region = registry.Get<ExpertRegion>();
                runtime.ExpertRegion = region;
                system.ActorOf(CheckpointGuard.PropsFor(status.Fingerprint, node.ModelDir, node.SeedAddresses(), status, node.AutoJoin), CheckpointGuard.Name);
                var cluster = Akka.Cluster.Cluster.Get(system);
                cluster.RegisterOnMemberUp(() => status.Set(NodePhase.Up, "member of the cluster"));
                cluster.RegisterOnMemberRemoved(() => status.Set(NodePhase.Leaving, "left the cluster"));
                // The reason is known once the shutdown runs (after the removal callbacks): downed, or a leave of our own.
                var shutdown = CoordinatedShutdown.Get(system);
                shutdown.AddTask(CoordinatedShutdown.PhaseBeforeServiceUnbind, "moe-downed-exit-code", () =>
                {
                    if (shutdown.ShutdownReason is CoordinatedShutdown.ClusterDowningReason) OnDowned(system, status);
                    return Task.FromResult(Akka.Done.Instance);
                });
                if (settings.Node.PauseFence is { } fenceAfter)
                {
                    var fenceLog = Logging.GetLogger(system, "pause-fence");
                    runtime.PauseFence = new Cluster.PauseFence(fenceAfter, m => fenceLog.Error(m));
                }
                if (!node.Role.RunsGateway()) return;

                var model = runtime.Model!;
                var gauges = new EngineGauges(cfg.NumLayers, cfg.NumExperts, settings.Scheduler.KvCacheBudgetBytes);
                var scheduler = system.ActorOf(SchedulerActor.PropsFor(model, runtime.Tokenizer!,
                    log => new ExpertDispatcher(region, settings.Experts, frame, log,
                        new ExpertReplySink(system, ComputeThreads.Get(system).Thread), ComputeThreads.Get(system).Thread,
                        () => AnyExpertHostReachable(cluster), ResidencyAgents(system, cluster, runtime.ExpertResidency is not null),
                        runtime.ExpertResidency, runtime.ExpertFailover, HostHealthOf(cluster)),
                    settings.Scheduler, gauges), "scheduler");
                registry.Register<SchedulerActor>(scheduler);
                runtime.Engine = new MoeEngine(system, scheduler, cfg, runtime.Tokenizer!, settings.Scheduler, gauges);
                cluster.RegisterOnMemberUp(() => _ = WarmUpAsync(system, region, cfg, settings.Experts, status));
            });
        });
        // Registered after Akka, so it stops first: drain before the ActorSystem leaves the cluster.
        services.AddHostedService(sp => new DrainOnShutdown(runtime, sp.GetRequiredService<ActorSystem>()));
        return services;
    }

    /// <summary>The cluster downed this node: it leaves (coordinated shutdown, which also stops the host); the server
    /// executable then exits with <see cref="Cluster.NodeExitCodes.DownedByCluster"/>.</summary>
    private static void OnDowned(ActorSystem system, NodeStatus status)
    {
        Logging.GetLogger(system, "cluster").Error("this node was downed by the cluster: leaving; the server exits with code {0} " +
            "(restart it to rejoin as a new member)", Cluster.NodeExitCodes.DownedByCluster);
        status.MarkDowned();
    }

    /// <summary>Whether some member that can host experts is up and reachable (read from the cluster's snapshot,
    /// safe off the actor threads).</summary>
    private static bool AnyExpertHostReachable(Akka.Cluster.Cluster cluster)
    {
        var state = cluster.State;
        return state.Members.Any(m => m.HasRole(NodeRoles.ExpertRole)
            && (m.Status is Akka.Cluster.MemberStatus.Up or Akka.Cluster.MemberStatus.WeaklyUp or Akka.Cluster.MemberStatus.Joining)
            && !state.Unreachable.Contains(m));
    }

    /// <summary>A member's health from the cluster's snapshot, by address string (re-indexed when the snapshot changes).</summary>
    private static Func<string, HostHealth> HostHealthOf(Akka.Cluster.Cluster cluster)
    {
        Akka.Cluster.ClusterEvent.CurrentClusterState? indexed = null;
        Dictionary<string, HostHealth> health = new(StringComparer.Ordinal);
        return address =>
        {
            var state = cluster.State;
            if (!ReferenceEquals(state, indexed))
            {
                health = new Dictionary<string, HostHealth>(StringComparer.Ordinal);
                foreach (var m in state.Members)
                    if (m.Status is Akka.Cluster.MemberStatus.Up or Akka.Cluster.MemberStatus.WeaklyUp or Akka.Cluster.MemberStatus.Joining or Akka.Cluster.MemberStatus.Leaving)
                        health[m.Address.ToString()] = HostHealth.Up;
                foreach (var m in state.Unreachable) health[m.Address.ToString()] = HostHealth.Unreachable;
                indexed = state;
            }
            return health.GetValueOrDefault(address, HostHealth.Gone);
        };
    }

    /// <summary>The residency agents of the expert nodes that are up (but this one, when it hosts experts itself: the
    /// dispatcher tells its residency directly), from the cluster's snapshot (re-resolved when membership changes).</summary>
    private static Func<IReadOnlyList<ActorSelection>> ResidencyAgents(ActorSystem system, Akka.Cluster.Cluster cluster, bool skipSelf)
    {
        IReadOnlyList<ActorSelection> agents = [];
        HashSet<Address> known = [];
        return () =>
        {
            var up = cluster.State.Members.Where(m => m.HasRole(NodeRoles.ExpertRole)
                && m.Status is Akka.Cluster.MemberStatus.Up or Akka.Cluster.MemberStatus.WeaklyUp
                && !(skipSelf && m.Address == cluster.SelfAddress)).Select(m => m.Address).ToHashSet();
            if (!up.SetEquals(known))
            {
                known = up;
                agents = up.Select(a => ExpertResidencyAgent.On(system, a)).ToList();
            }
            return agents;
        };
    }

    /// <summary>Pings every expert until all answer (their weights load on first contact), then reports ready.</summary>
    private static async Task WarmUpAsync(ActorSystem system, IActorRef region, ModelConfig cfg, ExpertOptions options, NodeStatus status)
    {
        var log = Logging.GetLogger(system, "warm-up");
        if (!options.WarmUp)
        {
            status.SetExpertsAnswered(true);
            return;
        }
        for (int attempt = 1; !system.WhenTerminated.IsCompleted; attempt++)
        {
            var problems = await ExpertPinger.PingAllAsync(region, cfg, TimeSpan.FromSeconds(5)).ConfigureAwait(false);
            if (problems.Count == 0)
            {
                log.Info("all {0} expert entities answered", ExpertPinger.AllExperts(cfg).Count());
                status.SetExpertsAnswered(true);
                return;
            }
            if (attempt % 5 == 1)
                log.Info("waiting for expert nodes: {0} experts not answering yet (e.g. {1}: {2})", problems.Count,
                    problems[0].Expert, problems[0].Problem);
            await Task.Delay(TimeSpan.FromSeconds(1)).ConfigureAwait(false);
        }
    }
}
