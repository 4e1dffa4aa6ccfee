using Akka.Actor;
using Akka.Cluster;
using Akka.Event;
using MoeServer.Actors.Hosting;

namespace MoeServer.Actors.Cluster;

/// <summary>
/// Keeps nodes with different checkpoints apart. Before joining, a node asks a seed node for the cluster's checkpoint
/// fingerprint and joins only when it matches its own; a mismatching node logs why and never joins (so it never gets
/// shards or work). As a second line, every member that comes up is asked for its fingerprint and downed on a mismatch.
/// </summary>
public sealed class CheckpointGuard : ReceiveActor, IWithTimers
{
    public const string Name = "checkpoint-guard";

    private sealed record ProbeSeeds;
    private sealed record SeedAnswer(CheckpointProtocol.Fingerprint Fingerprint);
    private sealed record MemberAnswer(Member Member, CheckpointProtocol.Fingerprint Fingerprint);

    private readonly CheckpointProtocol.Fingerprint _own;
    private IReadOnlyList<Address> _seeds;
    private readonly bool _autoJoin;
    private readonly NodeStatus _status;
    private readonly Akka.Cluster.Cluster _cluster = Akka.Cluster.Cluster.Get(Context.System);
    private readonly ILoggingAdapter _log = Context.GetLogger();
    private bool _joined;
    private int _probes;

    public ITimerScheduler Timers { get; set; } = null!;

    public CheckpointGuard(string fingerprint, string modelDir, IReadOnlyList<string> seedAddresses, NodeStatus status, bool autoJoin = true)
    {
        _autoJoin = autoJoin;
        _own = new CheckpointProtocol.Fingerprint(fingerprint, _cluster.SelfAddress.ToString(), modelDir);
        _seeds = seedAddresses.Select(Address.Parse).ToArray();
        _status = status;

        Receive<CheckpointProtocol.GetFingerprint>(_ => Sender.Tell(_own));
        Receive<ProbeSeeds>(_ => Probe());
        Receive<CheckpointProtocol.JoinVia>(OnJoinVia);
        Receive<SeedAnswer>(a => OnSeedAnswer(a.Fingerprint));
        Receive<ClusterEvent.MemberUp>(up => CheckMember(up.Member));
        Receive<MemberAnswer>(a =>
        {
            if (a.Fingerprint.Value == _own.Value) return;
            _log.Error("member {0} serves checkpoint {1} ({2}) but this cluster serves {3}: downing it so it gets no work",
                a.Member.Address, a.Fingerprint.Value, a.Fingerprint.ModelDir, _own.Value);
            _cluster.Down(a.Member.Address);
        });
        Receive<ClusterEvent.IClusterDomainEvent>(_ => { });
        Receive<Status.Failure>(_ => { }); // a probe that got no answer; the next one retries
    }

    public static Props PropsFor(string fingerprint, string modelDir, IReadOnlyList<string> seedAddresses, NodeStatus status, bool autoJoin = true) =>
        Props.Create(() => new CheckpointGuard(fingerprint, modelDir, seedAddresses, status, autoJoin));

    protected override void PreStart()
    {
        _cluster.Subscribe(Self, ClusterEvent.SubscriptionInitialStateMode.InitialStateAsEvents, typeof(ClusterEvent.MemberUp));
        var self = _cluster.SelfAddress;
        if (_seeds.Count == 0 && !_autoJoin)
        {
            _log.Info("no seed nodes and moe.node.auto-join = off: {0} waits for an operator's join (moectl cluster join ADDR)", self);
            _status.Set(NodePhase.Starting, "waiting to be told which cluster to join (moe.node.auto-join = off): moectl cluster join ADDR");
        }
        else if (_seeds.Count == 0)
        {
            _log.Info("no seed nodes: {0} forms its own cluster", self);
            Join([self]);
        }
        else if (_seeds[0].Equals(self))
        {
            _log.Info("{0} is the first seed node: joining {1}", self, string.Join(", ", _seeds));
            Join(_seeds);
        }
        else
        {
            _status.Set(NodePhase.Joining, "checking the cluster's checkpoint before joining");
            Self.Tell(new ProbeSeeds());
            Timers.StartPeriodicTimer("probe", new ProbeSeeds(), TimeSpan.FromSeconds(1));
        }
    }

    protected override void PostStop() => _cluster.Unsubscribe(Self);

    private void OnJoinVia(CheckpointProtocol.JoinVia m)
    {
        if (_joined || _cluster.State.Members.Any(x => x.Address.Equals(_cluster.SelfAddress)))
        {
            Sender.Tell(new Status.Failure(new InvalidOperationException(
                $"{_cluster.SelfAddress} is already a member of a cluster (or joining one); a node joins once (start it with moe.node.auto-join = off and no seed nodes)")));
            return;
        }
        Address target;
        try
        {
            target = Address.Parse(m.Address);
        }
        catch (Exception ex) when (ex is UriFormatException or ArgumentException or FormatException)
        {
            Sender.Tell(new Status.Failure(new ArgumentException($"'{m.Address}' is not an Akka address: {ex.Message}")));
            return;
        }
        _seeds = [target];
        _status.Set(NodePhase.Joining, $"checking the checkpoint of {target} before joining");
        Self.Tell(new ProbeSeeds());
        Timers.StartPeriodicTimer("probe", new ProbeSeeds(), TimeSpan.FromSeconds(1));
        Sender.Tell(new CheckpointProtocol.JoinStarted($"{_cluster.SelfAddress} joining the cluster of {target} once their checkpoints match"));
    }

    private void Join(IReadOnlyList<Address> seeds)
    {
        _joined = true;
        Timers.Cancel("probe");
        _status.Set(NodePhase.Joining, "joining the cluster");
        _cluster.JoinSeedNodes(seeds);
    }

    private void Probe()
    {
        if (_joined) return;
        if (++_probes % 10 == 0) _log.Info("still waiting for a seed node to answer ({0})", string.Join(", ", _seeds));
        foreach (var seed in _seeds)
        {
            if (seed.Equals(_cluster.SelfAddress)) continue;
            Context.ActorSelection($"{seed}/user/{Name}")
                .Ask<CheckpointProtocol.Fingerprint>(new CheckpointProtocol.GetFingerprint(), TimeSpan.FromSeconds(2))
                .PipeTo(Self, success: f => new SeedAnswer(f), failure: _ => new Status.Failure(new TimeoutException()));
        }
    }

    private void OnSeedAnswer(CheckpointProtocol.Fingerprint theirs)
    {
        if (_joined || _status.Phase == NodePhase.Refused) return;
        if (theirs.Value == _own.Value)
        {
            _log.Info("checkpoint {0} matches the cluster's ({1}): joining", _own.Value, theirs.Node);
            Join(_seeds);
            return;
        }
        Timers.Cancel("probe");
        string reason = $"refused: this node's checkpoint {_own.ModelDir} (fingerprint {_own.Value}) differs from the cluster's " +
            $"{theirs.ModelDir} on {theirs.Node} (fingerprint {theirs.Value}); this node does not join and gets no work";
        _log.Error(reason);
        _status.Set(NodePhase.Refused, reason);
    }

    private void CheckMember(Member m)
    {
        if (m.Address.Equals(_cluster.SelfAddress)) return;
        Context.ActorSelection($"{m.Address}/user/{Name}")
            .Ask<CheckpointProtocol.Fingerprint>(new CheckpointProtocol.GetFingerprint(), TimeSpan.FromSeconds(5))
            .PipeTo(Self, success: f => new MemberAnswer(m, f), failure: _ => new Status.Failure(new TimeoutException()));
    }
}
