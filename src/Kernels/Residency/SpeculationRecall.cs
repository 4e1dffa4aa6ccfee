using MoeServer.Kernels.Model;

namespace MoeServer.Kernels.Residency;

/// <summary>
/// Accumulates prediction quality of speculative lookahead gates per distance (layers ahead). Thread-safe: the compute
/// thread records while others take snapshots.
/// </summary>
public sealed class SpeculationRecall
{
    private sealed class Counts
    {
        public long Rows, TokenHits, TokenActual, Steps, SetHits, SetActual, SetPredicted;
        public double SetRecallSum;
    }

    private readonly Lock _lock = new();
    private readonly SortedDictionary<int, Counts> _byDistance = [];

    /// <summary>One row: <paramref name="predicted"/> and <paramref name="actual"/> are its experts at the layer
    /// <paramref name="distance"/> layers ahead of where the prediction was made.</summary>
    public void Record(int distance, int[] predicted, int[] actual)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(distance);
        int hits = actual.Distinct().Count(predicted.Contains), count = actual.Distinct().Count();
        lock (_lock)
        {
            var c = CountsOf(distance);
            c.Rows++;
            c.TokenHits += hits;
            c.TokenActual += count;
        }
    }

    /// <summary>One step: the batch's distinct predicted and actual experts of a layer. A step with no actual experts
    /// is not counted (nothing to recall).</summary>
    public void RecordSet(int distance, IEnumerable<int> predicted, IEnumerable<int> actual)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(distance);
        var p = predicted.ToHashSet();
        var a = actual.ToHashSet();
        if (a.Count == 0) return;
        int hits = a.Count(p.Contains);
        lock (_lock)
        {
            var c = CountsOf(distance);
            c.Steps++;
            c.SetRecallSum += (double)hits / a.Count;
            c.SetHits += hits;
            c.SetActual += a.Count;
            c.SetPredicted += p.Count;
        }
    }

    /// <summary>Scores <paramref name="speculation"/>'s prediction for <paramref name="actual"/>'s layer: every row and the
    /// step's set. False (nothing recorded) when that layer was not predicted.</summary>
    public bool Record(SpeculativeRouting speculation, ExpertRouting actual)
    {
        if (speculation.ForLayer(actual.Layer) is not { } predicted) return false;
        if (predicted.ExpertsOfToken.Length != actual.ExpertsOfToken.Length)
            throw new ArgumentException(
                $"layer {actual.Layer}: {predicted.ExpertsOfToken.Length} predicted rows but {actual.ExpertsOfToken.Length} routed rows (not the same batch)",
                nameof(actual));
        for (int t = 0; t < actual.ExpertsOfToken.Length; t++)
            Record(predicted.Distance, predicted.ExpertsOfToken[t], actual.ExpertsOfToken[t]);
        RecordSet(predicted.Distance, predicted.NeededExperts, actual.Groups.Select(g => g.Expert));
        return true;
    }

    /// <summary>The figures so far, by distance ascending.</summary>
    public IReadOnlyList<SpeculationRecallStats> Snapshot()
    {
        lock (_lock)
            return _byDistance.Select(p => new SpeculationRecallStats(p.Key, p.Value.Rows, p.Value.TokenHits, p.Value.TokenActual,
                p.Value.Steps, p.Value.SetRecallSum, p.Value.SetHits, p.Value.SetActual, p.Value.SetPredicted)).ToArray();
    }

    private Counts CountsOf(int distance)
    {
        if (!_byDistance.TryGetValue(distance, out var c)) _byDistance[distance] = c = new Counts();
        return c;
    }
}
