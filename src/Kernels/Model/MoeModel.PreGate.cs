using static TorchSharp.torch;

namespace MoeServer.Kernels.Model;

/// <summary>The decoupled router's output for one sampled token, computed before the step that appends it.</summary>
internal sealed record PreGatedToken(int Position, int Token, float[] Probabilities);

public sealed partial class MoeModel
{
    /// <summary>Whether every layer's experts can be known before the backbone runs (<c>readme_moe</c>).</summary>
    public bool CanPreGate => Weights.Router is not null;

    /// <summary>
    /// Exact pre-gating: runs the decoupled router over tokens just sampled (one per segment, not yet in the
    /// sequences) and returns the experts every layer will route each of them to, with each segment's routing override.
    /// The router's keys/values and probabilities are kept, so the step that appends the token does not run the router
    /// again and routes exactly as returned.
    /// </summary>
    public int[][][] PreGate(BatchLayout nextTokens)
    {
        if (Weights.Router is null)
            throw new InvalidOperationException($"{Config.Architecture} routes layer by layer: only a router-decoupled model can be pre-gated exactly");
        if (!nextTokens.IsAllDecode) throw new ArgumentException("pre-gating takes one token per sequence", nameof(nextTokens));
        using var noGrad = no_grad();
        using var ids = ValidatedTokenIds(nextTokens);
        var probs = RunRouter(nextTokens, ids);
        int E = Config.NumExperts;
        var result = new int[nextTokens.Segments.Count][][];
        for (int s = 0; s < nextTokens.Segments.Count; s++)
        {
            var seg = nextTokens.Segments[s];
            var p = probs.AsSpan(s * E, E).ToArray();
            seg.Cache.Router!.PreGated = new PreGatedToken(seg.Cache.Length, seg.Tokens[0], p);
            result[s] = ExpertsOf(p, seg.RoutingOrDefault);
        }
        return result;
    }

    /// <summary>Every layer's distinct experts for a batch whose router has run (<see cref="Embed"/>): what the step will
    /// need, known before the backbone's first layer.</summary>
    public int[][] StepExperts(BatchLayout batch)
    {
        var probs = batch.RouterProbabilities ?? throw new InvalidOperationException("the router has not run for this batch (Embed runs it)");
        int E = Config.NumExperts;
        var sets = Enumerable.Range(0, Config.NumLayers).Select(_ => new SortedSet<int>()).ToArray();
        for (int t = 0; t < batch.TotalTokens; t++)
        {
            var experts = ExpertsOf(probs.AsSpan(t * E, E).ToArray(), batch.Segments[batch.SegmentOfRow[t]].RoutingOrDefault);
            for (int l = 0; l < sets.Length; l++) sets[l].UnionWith(experts[l]);
        }
        return sets.Select(s => s.ToArray()).ToArray();
    }

    /// <summary>Each layer's top-k experts for one token's router probabilities (dense layers: none).</summary>
    private int[][] ExpertsOf(float[] probs, RoutingOverride ov)
    {
        int E = Config.NumExperts;
        int k = Math.Min(ov.TopKExperts ?? Config.NumExpertsPerToken, E);
        var p = probs.Select(v => (double)v).ToArray();
        var layers = new int[Config.NumLayers][];
        for (int l = 0; l < layers.Length; l++)
            layers[l] = Config.IsSparseLayer(l) ? TopK(p, k, e => ov.IsDisabled(l, e), Config.NormTopKProb).Experts : [];
        return layers;
    }

    /// <summary>The router's probabilities for a batch, reusing what <see cref="PreGate"/> computed for a segment's
    /// token and running the router over the other segments only.</summary>
    private float[] RouterProbabilities(BatchLayout batch, Tensor ids)
    {
        int E = Config.NumExperts;
        var pre = new PreGatedToken?[batch.Segments.Count];
        for (int s = 0; s < pre.Length; s++)
        {
            var seg = batch.Segments[s];
            if (seg.Tokens.Count == 1 && seg.Cache.Router?.PreGated is { } g && g.Position == seg.Cache.Length && g.Token == seg.Tokens[0])
                pre[s] = g;
            if (seg.Cache.Router is { } rc) rc.PreGated = null; // used now, or stale
        }
        if (pre.All(p => p is null)) return RunRouter(batch, ids);

        var probs = new float[batch.TotalTokens * E];
        var rest = Enumerable.Range(0, pre.Length).Where(s => pre[s] is null).ToArray();
        if (rest.Length > 0)
        {
            var sub = new BatchLayout(rest.Select(s => batch.Segments[s]).ToArray());
            using var subIds = tensor(sub.TokenIds.Select(i => (long)i).ToArray(), device: Device);
            var subProbs = RunRouter(sub, subIds);
            for (int i = 0; i < rest.Length; i++)
                Array.Copy(subProbs, sub.RowStart[i] * E, probs, batch.RowStart[rest[i]] * E, sub.Segments[i].Tokens.Count * E);
        }
        for (int s = 0; s < pre.Length; s++)
            if (pre[s] is { } g) Array.Copy(g.Probabilities, 0, probs, batch.RowStart[s] * E, E);
        return probs;
    }
}
