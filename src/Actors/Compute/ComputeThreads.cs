using Akka.Actor;

namespace MoeServer.Actors.Compute;

/// <summary>The node's one <see cref="ComputeThread"/>, as an ActorSystem extension (several nodes may share a
/// process: tests and benchmarks run three), stopped when the ActorSystem terminates.</summary>
public sealed class ComputeThreads : IExtension
{
    private ComputeThreads(ComputeThread thread) => Thread = thread;

    public ComputeThread Thread { get; }

    public static ComputeThreads Get(ActorSystem system) => system.WithExtension<ComputeThreads, Provider>();

    private sealed class Provider : ExtensionIdProvider<ComputeThreads>
    {
        public override ComputeThreads CreateExtension(ExtendedActorSystem system)
        {
            var thread = new ComputeThread("moe-compute");
            system.RegisterOnTermination(thread.Dispose);
            return new ComputeThreads(thread);
        }
    }
}
