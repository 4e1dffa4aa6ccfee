namespace MoeServer.Actors.Scheduling;

/// <summary>How the scheduler picks decode rows when more sequences are ready than a step takes.</summary>
public enum BatchingPolicy
{
    /// <summary>Longest-waiting first (round robin over the ready sequences).</summary>
    Fcfs,
    /// <summary>Fewest distinct experts per step (Read-ME's Algorithm 1), within a bound on waiting.</summary>
    ExpertAware,
}

/// <summary>A sequence ready to decode: when it last got a decode row, and the experts its next token needs per layer
/// (exact for a pre-gated router-decoupled model, predicted otherwise; null when unknown).</summary>
public readonly record struct DecodeCandidate(long LastScheduledStep, int[][]? Experts);

/// <summary>
/// Chooses which ready sequences get the step's decode rows. Expert-aware: first every sequence that has waited
/// <c>maxWaitSteps</c> steps (longest first: the fairness bound), then, as in Read-ME's Algorithm 1, the expert with
/// the longest queue seeds the batch and each next pick is the sequence that adds the fewest experts not yet in it
/// (ties: the more popular experts, then the longer wait).
/// </summary>
public static class DecodeBatching
{
    public static int[] Select(IReadOnlyList<DecodeCandidate> candidates, int capacity, long step, BatchingPolicy policy, int maxWaitSteps)
    {
        if (candidates.Count <= capacity) return Enumerable.Range(0, candidates.Count).ToArray();
        var byWait = Enumerable.Range(0, candidates.Count).OrderBy(i => candidates[i].LastScheduledStep).ThenBy(i => i).ToList();
        if (policy == BatchingPolicy.Fcfs) return byWait.Take(capacity).Order().ToArray();

        var chosen = new List<int>(capacity);
        var inBatch = new HashSet<(int Layer, int Expert)>();
        foreach (int i in byWait)
        {
            if (chosen.Count == capacity || step - candidates[i].LastScheduledStep < maxWaitSteps) break;
            Take(i);
        }
        var queue = new Dictionary<(int, int), int>(); // how many ready sequences need each expert
        foreach (var c in candidates)
            foreach (var e in ExpertsOf(c))
                queue[e] = queue.GetValueOrDefault(e) + 1;
        var remaining = new HashSet<int>(Enumerable.Range(0, candidates.Count).Except(chosen));
        if (inBatch.Count == 0 && chosen.Count < capacity && queue.Count > 0)
        {
            var seed = queue.MaxBy(kv => (kv.Value, -kv.Key.Item1, -kv.Key.Item2)).Key;
            int first = remaining.Where(i => ExpertsOf(candidates[i]).Contains(seed))
                .OrderBy(i => candidates[i].LastScheduledStep).ThenBy(i => i).First();
            Take(first);
            remaining.Remove(first);
        }
        while (chosen.Count < capacity && remaining.Count > 0)
        {
            int best = remaining.MinBy(i =>
            {
                var experts = ExpertsOf(candidates[i]);
                return (experts.Count(e => !inBatch.Contains(e)), -experts.Sum(e => queue.GetValueOrDefault(e)), candidates[i].LastScheduledStep, i);
            });
            Take(best);
            remaining.Remove(best);
        }
        return chosen.Order().ToArray();

        void Take(int i)
        {
            chosen.Add(i);
            foreach (var e in ExpertsOf(candidates[i])) inBatch.Add(e);
        }
    }

    /// <summary>The distinct (layer, expert) pairs a candidate needs.</summary>
    public static IEnumerable<(int Layer, int Expert)> ExpertsOf(DecodeCandidate c) =>
        c.Experts is null ? [] : c.Experts.SelectMany((es, l) => es.Select(e => (l, e))).Distinct();
}
