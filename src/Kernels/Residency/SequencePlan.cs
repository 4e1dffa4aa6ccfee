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
    private readonly Func<long, long> _visibleUntil;

    public SequencePlan(IReadOnlyList<ExpertId> uses, long visible = long.MaxValue)
        : this(uses, now => visible == long.MaxValue ? long.MaxValue : now + visible)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(visible, 1);
    }

    /// <summary>A plan that at time <c>now</c> sees the uses up to <paramref name="visibleUntil"/>(now), inclusive
    /// (e.g. to the end of the current engine step, which is what exact pre-gating knows).</summary>
    public SequencePlan(IReadOnlyList<ExpertId> uses, Func<long, long> visibleUntil)
    {
        _uses = uses;
        _visibleUntil = visibleUntil;
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
        return next <= _visibleUntil(now) ? next : long.MaxValue;
    }

    public IEnumerable<(long Time, ExpertId Expert)> Upcoming(long now, int count)
    {
        long end = Math.Min(_uses.Count - 1, _visibleUntil(now));
        for (long t = now + 1; t <= end && count > 0; t++, count--) yield return (t, _uses[(int)t]);
    }
}
