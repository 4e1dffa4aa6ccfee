namespace MoeServer.Actors.Scheduling;

/// <summary>How many of a step's rows are expected at one expert, and how sure the router is (1: exact pre-gating;
/// below 1: a prediction, at its measured hit rate).</summary>
public readonly record struct ExpertDemand(int Rows, double Confidence);

/// <summary>
/// What the router knows, before a step runs, about the experts its decode rows need: per layer, expert -> demand.
/// Exact for router-decoupled models (the router ran when each token was sampled); for layer-wise models a
/// prediction (each layer's gate on the token's embedding, or "keeps its last token's experts"). Prefill chunks are
/// not in it (their routing is known once the step's gates run).
/// </summary>
public sealed record PreGatePlan(long StepId, IReadOnlyList<IReadOnlyDictionary<int, ExpertDemand>> Layers)
{
    public int DistinctExperts => Layers.Sum(l => l.Count);

    /// <summary>The plan of a step's decode rows from each one's next-token experts (null: unknown).</summary>
    public static PreGatePlan For(long stepId, int numLayers, IEnumerable<(int[][]? Experts, bool Exact)> rows, Func<int, double> predictedConfidence)
    {
        var layers = Enumerable.Range(0, numLayers).Select(_ => new Dictionary<int, (int Rows, double Sure)>()).ToArray();
        foreach (var (experts, exact) in rows)
        {
            if (experts is null) continue;
            for (int l = 0; l < Math.Min(numLayers, experts.Length); l++)
            {
                double sure = exact ? 1 : predictedConfidence(l);
                foreach (int e in experts[l])
                {
                    var d = layers[l].GetValueOrDefault(e);
                    layers[l][e] = (d.Rows + 1, Math.Max(d.Sure, sure));
                }
            }
        }
        return new PreGatePlan(stepId, layers.Select(l => (IReadOnlyDictionary<int, ExpertDemand>)l.ToDictionary(kv => kv.Key, kv => new ExpertDemand(kv.Value.Rows, kv.Value.Sure))).ToArray());
    }
}
