using MoeServer.Kernels.Model;

namespace MoeServer.Kernels.Residency;

/// <summary>
/// A plan read off a known sequence of uses (position = time). <paramref name="visible"/> limits how far ahead of
/// now it can see; unlimited, it is the full future Belady's bound assumes.
/// </summary>
public sealed class SequencePlan : IExpertPlan
{
    private readonly IReadOnlyList<ExpertId> _uses;
    private readonly Dictionary<ExpertId, List<long>> _positions = [];
    private readonly long _visible;

    public SequencePlan(IReadOnlyList<ExpertId> uses, long visible = long.MaxValue)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(visible, 1);
        _uses = uses;
        _visible = visible;
        for (int i = 0; i < uses.Count; i++)
        {
            if (!_positions.TryGetValue(uses[i], out var list)) _positions[uses[i]] = list = [];
            list.Add(i);
        }
    }

    public long NextUse(ExpertId expert, long now)
    {
        if (!_positions.TryGetValue(expert, out var list)) return long.MaxValue;
        int i = list.BinarySearch(now + 1);
        if (i < 0) i = ~i;
        if (i == list.Count) return long.MaxValue;
        long next = list[i];
        return next - now <= _visible ? next : long.MaxValue;
    }

    public IEnumerable<(long Time, ExpertId Expert)> Upcoming(long now, int count)
    {
        long end = Math.Min(_uses.Count - 1, _visible == long.MaxValue ? long.MaxValue : now + _visible);
        for (long t = now + 1; t <= end && count > 0; t++, count--) yield return (t, _uses[(int)t]);
    }
}
