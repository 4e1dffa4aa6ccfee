using MoeServer.Kernels.Model;
using Akka.Cluster.Sharding;


namespace MoeServer.Actors.Experts;

/// <summary>Entity id "{layer}.{expert}"; shard id from Akka's stable murmur hash of it (the same in every process,
/// unlike string.GetHashCode).</summary>
public sealed class ExpertMessageExtractor(int numberOfShards) : HashCodeMessageExtractor(numberOfShards)
{
    public override string? EntityId(object message) => message switch
    {
        IWithExpertId m => m.Expert.EntityId,
        _ => null,
    };
}
