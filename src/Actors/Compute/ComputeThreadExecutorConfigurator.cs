using Akka.Configuration;
using Akka.Dispatch;

namespace MoeServer.Actors.Compute;

/// <summary>
/// Akka executor (<c>executor = "MoeServer.Actors.Compute.ComputeThreadExecutorConfigurator, MoeServer.Actors"</c>)
/// that runs a dispatcher's mailboxes on the node's <see cref="ComputeThread"/>.
/// </summary>
public sealed class ComputeThreadExecutorConfigurator(Config config, IDispatcherPrerequisites prerequisites)
    : ExecutorServiceConfigurator(config, prerequisites)
{
    public override ExecutorService Produce(string id) =>
        new ComputeThreadExecutor(id, ComputeThreads.Get(Prerequisites.Settings.System).Thread);

    private sealed class ComputeThreadExecutor(string id, ComputeThread thread) : ExecutorService(id)
    {
        public override void Execute(IRunnable run) => thread.Execute(run);

        // The thread belongs to the node (ComputeThreads), not to the dispatcher: it stops with the ActorSystem.
        public override void Shutdown() { }
    }
}
