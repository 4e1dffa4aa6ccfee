using Akka.Actor;
using Akka.Hosting;

namespace MoeServer.Actors.Experts;

/// <summary>
/// One per expert node, at <c>/user/expert-residency</c>: hands the router's step announcements to the node's
/// <see cref="ExpertResidency"/> as soon as they arrive (on a thread-pool dispatcher, not the compute thread, so a
/// plan is in place before the step's batches reach the entities and the prefetcher can start at once).
/// </summary>
public sealed class ExpertResidencyAgent : ReceiveActor
{
    public const string Name = "expert-residency";

    public ExpertResidencyAgent(ExpertResidency residency)
    {
        Receive<ExpertProtocol.AnnounceStep>(m =>
        {
            for (int l = 0; l < m.ExpertsByLayer.Length; l++)
                if (m.ExpertsByLayer[l].Length > 0) residency.Announce(m.StepId, l, m.ExpertsByLayer[l]);
        });
    }

    public static Props PropsFor(ExpertResidency residency) => Props.Create(() => new ExpertResidencyAgent(residency));

    /// <summary>The agent of the node at <paramref name="address"/>.</summary>
    public static ActorSelection On(ActorSystem system, Address address) =>
        system.ActorSelection(new RootActorPath(address) / "user" / Name);
}

public static class ExpertResidencyAgentRegistration
{
    /// <summary>Starts the residency agent of an expert node.</summary>
    public static AkkaConfigurationBuilder AddExpertResidencyAgent(this AkkaConfigurationBuilder builder, ExpertResidency residency) =>
        builder.WithActors((system, registry) => registry.Register<ExpertResidencyAgent>(
            system.ActorOf(ExpertResidencyAgent.PropsFor(residency), ExpertResidencyAgent.Name)));
}
