using MoeServer.Kernels.Model;

namespace MoeServer.Kernels.Residency;

/// <summary>
/// The activation-aware baseline, in the spirit of MoE-Infinity: every request keeps its expert-activation history
/// (how often each of its tokens went to each expert, per layer); the experts the running batch's histories use most
/// are expected soonest (later layers of this step, else the next step) and prefetched first, and the least
/// activated are evicted first. It knows nothing the router announces: only what requests did before.
/// </summary>
public sealed class ActivationAwarePlan : IExpertPlan
{
    private readonly int _layers, _experts;
    private readonly Dictionary<string, (long[] Counts, long Tokens)> _history = [];
    private readonly double[] _demand;
    private long _step;
    private int _layer;

    public ActivationAwarePlan(int numLayers, int numExperts)
    {
        _layers = numLayers;
        _experts = numExperts;
        _demand = new double[numLayers * numExperts];
        Stride = numLayers + 1;
    }

    public long Stride { get; }

    public long TimeOf(long step, int layer) => step * Stride + layer;

    /// <summary>A step of these sequences starts: demand = the sum of their activation frequencies.</summary>
    public void BeginStep(long step, IEnumerable<string> sequences)
    {
        _step = step;
        _layer = 0;
        Array.Clear(_demand);
        foreach (var id in sequences)
        {
            if (!_history.TryGetValue(id, out var h) || h.Tokens == 0) continue;
            for (int i = 0; i < _demand.Length; i++) _demand[i] += (double)h.Counts[i] / h.Tokens;
        }
    }

    /// <summary>The batch is at <paramref name="layer"/> now.</summary>
    public long At(int layer)
    {
        _layer = layer;
        return TimeOf(_step, layer);
    }

    /// <summary>A sequence's token was routed to <paramref name="experts"/> at <paramref name="layer"/>.</summary>
    public void Record(string sequence, int layer, int[] experts)
    {
        if (!_history.TryGetValue(sequence, out var h)) h = (new long[_layers * _experts], 0);
        foreach (int e in experts) h.Counts[layer * _experts + e]++;
        if (layer == 0) h.Tokens++;
        _history[sequence] = h;
    }

    public long NextUse(ExpertId expert, long now)
    {
        double d = _demand[expert.Layer * _experts + expert.Expert];
        if (d <= 0) return long.MaxValue;
        long t = expert.Layer >= _layer ? TimeOf(_step, expert.Layer) : TimeOf(_step + 1, expert.Layer);
        // Less activated experts look further away (up to a few steps): eviction order follows activation.
        return t + (long)(Stride * 4 / (1 + d));
    }

    public IEnumerable<(long Time, ExpertId Expert)> Upcoming(long now, int count) =>
        Enumerable.Range(_layer, _layers - _layer)
            .SelectMany(l => Enumerable.Range(0, _experts).Select(e => new ExpertId(l, e)))
            .Where(e => _demand[e.Layer * _experts + e.Expert] > 0)
            .Select(e => (Time: NextUse(e, now), Expert: e))
            .OrderBy(u => u.Time).Take(count);
}
