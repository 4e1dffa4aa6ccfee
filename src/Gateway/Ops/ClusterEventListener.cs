using System.Threading.Channels;
using Akka.Actor;
using Akka.Cluster;

namespace MoeServer.Gateway.Ops;

/// <summary>One membership or reachability event, as <c>moectl cluster tail</c> prints it.</summary>
public sealed record ClusterEventLine(DateTime Time, string Event, string Address, string Status, string[] Roles);

/// <summary>Subscribes to the cluster's membership and reachability events (current members first, as events) and
/// hands them to one ops client's stream; stopped when the client goes.</summary>
internal sealed class ClusterEventListener : ReceiveActor
{
    public ClusterEventListener(ChannelWriter<ClusterEventLine> output)
    {
        var cluster = Cluster.Get(Context.System);
        Receive<ClusterEvent.IMemberEvent>(e => output.TryWrite(Line(e.GetType().Name, e.Member)));
        Receive<ClusterEvent.UnreachableMember>(e => output.TryWrite(Line("UnreachableMember", e.Member)));
        Receive<ClusterEvent.ReachableMember>(e => output.TryWrite(Line("ReachableMember", e.Member)));
        cluster.Subscribe(Self, ClusterEvent.SubscriptionInitialStateMode.InitialStateAsEvents,
            typeof(ClusterEvent.IMemberEvent), typeof(ClusterEvent.IReachabilityEvent));
    }

    private static ClusterEventLine Line(string name, Member m) =>
        new(DateTime.UtcNow, name, m.Address.ToString(), m.Status.ToString(), m.Roles.Order().ToArray());

    protected override void PostStop() => Cluster.Get(Context.System).Unsubscribe(Self);
}
