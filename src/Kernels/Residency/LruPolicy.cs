using MoeServer.Kernels.Model;

namespace MoeServer.Kernels.Residency;

/// <summary>Evicts the expert used least recently. Recency is the order of calls, not <c>now</c>: live engine time
/// is per layer, and several experts of one layer share it.</summary>
public sealed class LruPolicy : ResidencyPolicy
{
    private readonly Dictionary<ExpertId, long> _lastUse = [];
    private long _clock;

    public override string Name => "lru";

    public override void Used(ExpertId expert, long now) => _lastUse[expert] = ++_clock;

    public override void Loaded(ExpertId expert, long now) => _lastUse.TryAdd(expert, ++_clock);

    public override void Evicted(ExpertId expert) => _lastUse.Remove(expert);

    internal long LastUse(ExpertId expert) => _lastUse.GetValueOrDefault(expert, long.MinValue);

    public override ExpertId Victim(IReadOnlyCollection<ExpertId> candidates, long now) =>
        candidates.MinBy(e => (LastUse(e), e.Layer, e.Expert));
}
