using Akka.Configuration;
using Akka.Dispatch;

namespace MoeServer.Actors.Compute;

/// <summary>
/// Akka executor (<c>executor = "MoeServer.Actors.Compute.ComputeThreadExecutorConfigurator, MoeServer.Actors"</c>)
/// that runs a dispatcher's mailboxes on the node's <see cref="ComputeThread"/>. <c>compute-lane = experts</c>
/// (default): also inside a step waiting for expert replies; <c>between-steps</c>: only between steps.
/// </summary>
public sealed class ComputeThreadExecutorConfigurator(Config config, IDispatcherPrerequisites prerequisites)
    : ExecutorServiceConfigurator(config, prerequisites)
{
    private readonly bool _betweenSteps = config.GetString("compute-lane", "experts") switch
    {
        "experts" => false,
        "between-steps" => true,
        var other => throw new ConfigurationException($"compute-lane must be experts or between-steps, not '{other}'"),
    };

    public override ExecutorService Produce(string id) =>
        new ComputeThreadExecutor(id, ComputeThreads.Get(Prerequisites.Settings.System).Thread, _betweenSteps);

    private sealed class ComputeThreadExecutor(string id, ComputeThread thread, bool betweenSteps) : ExecutorService(id)
    {
        public override void Execute(IRunnable run)
        {
            if (betweenSteps) thread.ExecuteBetweenSteps(run);
            else thread.Execute(run);
        }

        // The thread belongs to the node (ComputeThreads), not to the dispatcher: it stops with the ActorSystem.
        public override void Shutdown() { }
    }
}
