using MoeServer.Kernels.Model;

namespace MoeServer.Actors.Experts;

/// <summary>Messages routed to an expert entity by the shard region.</summary>
public interface IWithExpertId
{
    ExpertId Expert { get; }
}
