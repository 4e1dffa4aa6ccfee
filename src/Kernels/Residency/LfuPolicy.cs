using MoeServer.Kernels.Model;

namespace MoeServer.Kernels.Residency;

/// <summary>
/// Evicts the expert used least often (counts survive eviction: an expert's popularity is a property of the model
/// and the traffic, not of its stay in the cache); ties go to the least recently used.
/// </summary>
public sealed class LfuPolicy : ResidencyPolicy
{
    private readonly Dictionary<ExpertId, long> _uses = [];
    private readonly LruPolicy _recency = new();

    public override string Name => "lfu";

    public override void Used(ExpertId expert, long now)
    {
        _uses[expert] = _uses.GetValueOrDefault(expert) + 1;
        _recency.Used(expert, now);
    }

    public override void Loaded(ExpertId expert, long now) => _recency.Loaded(expert, now);

    public override void Evicted(ExpertId expert) => _recency.Evicted(expert);

    public override ExpertId Victim(IReadOnlyCollection<ExpertId> candidates, long now) =>
        candidates.MinBy(e => (_uses.GetValueOrDefault(e), _recency.LastUse(e), e.Layer, e.Expert));
}
