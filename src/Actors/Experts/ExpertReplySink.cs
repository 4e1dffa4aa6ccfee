using System.Collections.Concurrent;
using Akka.Actor;
using MoeServer.Actors.Compute;

namespace MoeServer.Actors.Experts;

/// <summary>
/// Where expert entities send their replies: one long-lived temporary actor ref per router (what Ask creates per
/// message, without the per-message actor, task and continuation). Replies from other nodes reach it through its
/// temp path like an Ask's. Each reply wakes the compute thread waiting for it.
/// </summary>
public sealed class ExpertReplySink : MinimalActorRef, IDisposable
{
    private readonly ConcurrentQueue<(object Message, IActorRef Sender)> _replies = new();
    private readonly ComputeThread _waiter;

    public ExpertReplySink(ActorSystem system, ComputeThread waiter)
    {
        Provider = ((ExtendedActorSystem)system).Provider;
        Path = Provider.TempPath();
        _waiter = waiter;
        Provider.RegisterTempActor(this, Path);
    }

    public override ActorPath Path { get; }

    public override IActorRefProvider Provider { get; }

    public bool HasReplies => !_replies.IsEmpty;

    public bool TryTake(out object message, out IActorRef sender)
    {
        if (_replies.TryDequeue(out var r))
        {
            (message, sender) = r;
            return true;
        }
        (message, sender) = (null!, ActorRefs.Nobody);
        return false;
    }

    protected override void TellInternal(object message, IActorRef sender)
    {
        _replies.Enqueue((message, sender));
        _waiter.Signal();
    }

    public void Dispose() => Provider.UnregisterTempActor(Path);
}
