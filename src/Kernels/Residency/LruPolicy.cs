using MoeServer.Kernels.Model;

namespace MoeServer.Kernels.Residency;

/// <summary>Evicts the expert used least recently.</summary>
public sealed class LruPolicy : ResidencyPolicy
{
    private readonly Dictionary<ExpertId, long> _lastUse = [];

    public override string Name => "lru";

    public override void Used(ExpertId expert, long now) => _lastUse[expert] = now;

    public override void Loaded(ExpertId expert, long now) => _lastUse.TryAdd(expert, now);

    public override void Evicted(ExpertId expert) => _lastUse.Remove(expert);

    internal long LastUse(ExpertId expert) => _lastUse.GetValueOrDefault(expert, long.MinValue);

    public override ExpertId Victim(IReadOnlyCollection<ExpertId> candidates, long now) =>
        candidates.MinBy(e => (LastUse(e), e.Layer, e.Expert));
}
