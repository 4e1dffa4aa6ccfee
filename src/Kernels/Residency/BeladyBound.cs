using MoeServer.Kernels.Model;

namespace MoeServer.Kernels.Residency;

/// <summary>
/// The fewest loads any policy can get away with on a known sequence of uses (Belady's MIN: on a miss with a full
/// cache, evict the expert whose next use is furthest away). Written apart from ExpertCache + LookaheadPolicy,
/// directly over the sequence, so the two check each other.
/// </summary>
public static class BeladyBound
{
    public static long MinimumLoads(IReadOnlyList<ExpertId> uses, int capacity)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        // next[i]: the position of the next use of uses[i] after i (int.MaxValue when none)
        var next = new int[uses.Count];
        var seen = new Dictionary<ExpertId, int>();
        for (int i = uses.Count - 1; i >= 0; i--)
        {
            next[i] = seen.TryGetValue(uses[i], out int n) ? n : int.MaxValue;
            seen[uses[i]] = i;
        }
        var nextUseOf = new Dictionary<ExpertId, int>(); // resident expert -> its next use
        long loads = 0;
        for (int i = 0; i < uses.Count; i++)
        {
            var e = uses[i];
            if (!nextUseOf.ContainsKey(e))
            {
                loads++;
                if (nextUseOf.Count == capacity)
                {
                    var victim = nextUseOf.MaxBy(kv => kv.Value).Key;
                    nextUseOf.Remove(victim);
                }
            }
            nextUseOf[e] = next[i];
        }
        return loads;
    }

    /// <summary>The best no-load rate (1 - loads / uses) possible at this capacity.</summary>
    public static double NoLoadRate(IReadOnlyList<ExpertId> uses, int capacity) =>
        uses.Count == 0 ? 0 : 1 - (double)MinimumLoads(uses, capacity) / uses.Count;
}
