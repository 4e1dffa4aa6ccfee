using MoeServer.Kernels.Model;

namespace MoeServer.Kernels.Residency;

/// <summary>
/// An expert node's view of the upcoming uses of its experts, in engine time (step, layer): the uses the router
/// announced (exact pre-gating: a whole step; speculative gates: the next few layers), consumed as the batches run;
/// beyond them, a use predicted one step after each expert's last one, at the same layer (decode steps repeat the
/// running batch, so an expert a step used is the best guess for the next). The live residency and the trace
/// simulator share this plan, so the simulator replays what a node decides. Not thread-safe; one owner.
/// </summary>
public sealed class PlanBook : IExpertPlan
{
    private readonly Dictionary<ExpertId, SortedSet<long>> _announced = [];
    private readonly Dictionary<ExpertId, long> _lastUse = [];
    private readonly Dictionary<ExpertId, double> _meanGap = [];
    private readonly bool _predictNextStep;

    public PlanBook(int numLayers, bool predictNextStep = true)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(numLayers, 1);
        Stride = numLayers + 1;
        _predictNextStep = predictNextStep;
    }

    /// <summary>Engine times per step (a gap after the last layer keeps steps apart).</summary>
    public long Stride { get; }

    /// <summary>Engine time of the last use or announcement seen.</summary>
    public long Now { get; private set; }

    public long TimeOf(long step, int layer) => step * Stride + layer;

    /// <summary>The router expects <paramref name="experts"/> of <paramref name="layer"/> to run in
    /// <paramref name="step"/>.</summary>
    public void Announce(long step, int layer, IEnumerable<int> experts)
    {
        long t = TimeOf(step, layer);
        foreach (int e in experts)
        {
            var id = new ExpertId(layer, e);
            if (!_announced.TryGetValue(id, out var times)) _announced[id] = times = [];
            times.RemoveWhere(x => x < Now); // predictions that never ran: an expert announced but never used stays small
            times.Add(t);
        }
    }

    /// <summary>A use happened: it is no longer upcoming, and it is what the next-step prediction starts from.
    /// Returns its engine time (the <c>now</c> to give the cache).</summary>
    public long Consume(ExpertId expert, long step)
    {
        long t = TimeOf(step, expert.Layer);
        if (t > Now) Now = t;
        if (_announced.TryGetValue(expert, out var times))
        {
            times.Remove(t);
            times.RemoveWhere(x => x < t); // announced for an earlier step and never run (a cancelled request)
            if (times.Count == 0) _announced.Remove(expert);
        }
        if (_lastUse.TryGetValue(expert, out long last) && t > last)
        {
            // Steps between uses, smoothed: an expert every step needs is due next step, one used every
            // third step three steps on.
            double gap = (double)(t - last) / Stride;
            _meanGap[expert] = _meanGap.TryGetValue(expert, out double m) ? 0.85 * m + 0.15 * gap : gap;
        }
        _lastUse[expert] = t;
        return t;
    }

    /// <summary>Announced uses at or after <paramref name="now"/> (one at <c>now</c> is still to run in this layer), else
    /// the predicted one: the same layer k steps after the last use, pushed k-1 more steps back for every step the
    /// expert went unused (a stale expert looks further away), or never.</summary>
    public long NextUse(ExpertId expert, long now)
    {
        if (_announced.TryGetValue(expert, out var times))
        {
            var view = times.GetViewBetween(now, long.MaxValue);
            if (view.Count > 0) return view.Min;
        }
        if (!_predictNextStep || !_lastUse.TryGetValue(expert, out long last)) return long.MaxValue;
        long gap = (long)Math.Ceiling(_meanGap.GetValueOrDefault(expert, 1.0) * Stride);
        long due = last + gap;
        return due >= now ? due : now + (now - last); // overdue: as far ahead as it has been away

    }

    public IEnumerable<(long Time, ExpertId Expert)> Upcoming(long now, int count) =>
        _announced.SelectMany(kv => kv.Value.GetViewBetween(now, long.MaxValue).Select(t => (Time: t, Expert: kv.Key)))
            .OrderBy(u => u.Time).ThenBy(u => u.Expert.Layer).ThenBy(u => u.Expert.Expert).Take(count);
}
