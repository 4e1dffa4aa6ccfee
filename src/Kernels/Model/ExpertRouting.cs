namespace MoeServer.Kernels.Model;

/// <summary>The rows of a batch one expert must process, with each row's gate weight.</summary>
public sealed record ExpertGroup(int Expert, int[] Rows, float[] Weights);

/// <summary>
/// The router's decision for one layer over a batch: per token, the chosen experts and weights; and the same
/// grouped by expert (rows sorted), which is how the work is dispatched: one batch per active expert.
/// </summary>
public sealed class ExpertRouting
{
    public int Layer { get; }
    public int[][] ExpertsOfToken { get; }
    public float[][] WeightsOfToken { get; }
    public IReadOnlyList<ExpertGroup> Groups { get; }

    public ExpertRouting(int layer, int[][] experts, float[][] weights, int numExperts)
    {
        Layer = layer;
        ExpertsOfToken = experts;
        WeightsOfToken = weights;
        var rows = new List<int>[numExperts];
        var ws = new List<float>[numExperts];
        for (int t = 0; t < experts.Length; t++)
        {
            for (int j = 0; j < experts[t].Length; j++)
            {
                int e = experts[t][j];
                (rows[e] ??= []).Add(t);
                (ws[e] ??= []).Add(weights[t][j]);
            }
        }
        var groups = new List<ExpertGroup>();
        for (int e = 0; e < numExperts; e++)
            if (rows[e] is { Count: > 0 } r) groups.Add(new ExpertGroup(e, r.ToArray(), ws[e].ToArray()));
        Groups = groups;
    }
}
