using Linear = MoeServer.Kernels.Tests.Reference.ReferenceModel.Linear;
using Ffn = MoeServer.Kernels.Tests.Reference.ReferenceModel.Ffn;

namespace MoeServer.Kernels.Tests.Reference;

/// <summary>
/// Plain float64 reference (oracle) for <c>readme_moe</c>, the router-decoupled MoE (Read-ME style), written straight
/// from src/Kernels/Model/ROUTER_DECOUPLED_SPEC.md with simple loops, one token at a time. For each token at position p:
/// the router (a tiny Llama decoder over token ids with its own KV cache) gives P = softmax(head(norm(r))) over the E
/// experts, the top-k of P are picked once, and every backbone layer (Llama attention + those experts, weighted by P,
/// plus an ungated shared expert when S &gt; 0) uses that choice. Prefill is Forward with many tokens, decode with one.
/// Shares no code with src/; the scalar math helpers (RMSNorm, RoPE, softmax, SiLU) are
/// <see cref="ReferenceModel"/>'s, which its own self-tests pin down. Not thread-safe (the Last* properties are per instance).
/// </summary>
public sealed class ReferenceRouterDecoupledModel
{
    // Linear and Ffn are ReferenceModel's (pinned down by its self-tests); the spec has no biases anywhere.

    private sealed record Attn(Linear Q, Linear K, Linear V, Linear O, int Heads, int KvHeads, int HeadDim);

    private sealed record RouterLayer(double[] InputNorm, double[] PostAttentionNorm, Attn Attn, Ffn Mlp);

    private sealed record BackboneLayer(double[] InputNorm, double[] PostAttentionNorm, Attn Attn, Ffn[] Experts, Ffn? Shared);

    private readonly double[] _embed;       // [V, H]
    private readonly double[] _lmHead;      // [V, H] (the embedding itself when tied)
    private readonly double[] _finalNorm;   // [H]
    private readonly BackboneLayer[] _layers;
    private readonly double[] _routerEmbed; // [V, Hr]
    private readonly RouterLayer[] _routerLayers;
    private readonly double[] _routerNorm;  // [Hr]
    private readonly Linear _routerHead;    // [E, Hr]

    public ReferenceRouterDecoupledConfig Config { get; }

    /// <summary>Checkpoint tensors the model never read (e.g. a stray per-layer gate, rotary buffers, lm_head when tied).</summary>
    public IReadOnlyList<string> UnusedTensorNames { get; }

    /// <summary>For the last Forward call: [layer][token] = the experts used, highest probability first.</summary>
    public int[][][] LastRouting { get; private set; } = [];

    /// <summary>For the last Forward call: [layer][token] = the weights applied to LastRouting's experts.</summary>
    public double[][][] LastRoutingWeights { get; private set; } = [];

    /// <summary>For the last Forward call: [token] = the router head's logits z [E].</summary>
    public double[][] LastRouterLogits { get; private set; } = [];

    /// <summary>For the last Forward call: [token] = P = softmax(z) [E].</summary>
    public double[][] LastRouterProbabilities { get; private set; } = [];

    private ReferenceRouterDecoupledModel(
        ReferenceRouterDecoupledConfig config, double[] embed, double[] lmHead, double[] finalNorm, BackboneLayer[] layers,
        double[] routerEmbed, RouterLayer[] routerLayers, double[] routerNorm, Linear routerHead, IReadOnlyList<string> unused)
    {
        Config = config;
        _embed = embed;
        _lmHead = lmHead;
        _finalNorm = finalNorm;
        _layers = layers;
        _routerEmbed = routerEmbed;
        _routerLayers = routerLayers;
        _routerNorm = routerNorm;
        _routerHead = routerHead;
        UnusedTensorNames = unused;
    }

    public ReferenceRouterDecoupledSequence NewSequence() => new(Config.RouterNumHiddenLayers, Config.NumHiddenLayers);

    // ---------------------------------------------------------------- loading

    /// <summary>Tensor access that checks shapes, names the checkpoint in errors and records which names were used.</summary>
    private sealed class Source(ReferenceSafetensors st, string origin)
    {
        private readonly HashSet<string> _used = new(StringComparer.Ordinal);

        public bool Has(string name) => st.ContainsKey(name);

        public double[] Take(string name, params int[] shape)
        {
            if (!st.ContainsKey(name))
                throw new InvalidDataException(
                    $"readme_moe checkpoint {origin} lacks tensor '{name}' (expected shape [{string.Join(",", shape)}]).");
            var t = st.Read(name);
            if (!t.Shape.SequenceEqual(shape))
                throw new InvalidDataException(
                    $"readme_moe checkpoint {origin}: tensor '{name}' has shape [{string.Join(",", t.Shape)}], expected [{string.Join(",", shape)}].");
            _used.Add(name);
            return t.Data;
        }

        public Linear Linear(string name, int outDim, int inDim) => new(Take(name, outDim, inDim), outDim, inDim, null);

        public Ffn Ffn(string prefix, int hidden, int width) => new(
            Linear(prefix + "gate_proj.weight", width, hidden),
            Linear(prefix + "up_proj.weight", width, hidden),
            Linear(prefix + "down_proj.weight", hidden, width));

        public Attn Attn(string prefix, int hidden, int heads, int kvHeads, int headDim) => new(
            Linear(prefix + "q_proj.weight", heads * headDim, hidden),
            Linear(prefix + "k_proj.weight", kvHeads * headDim, hidden),
            Linear(prefix + "v_proj.weight", kvHeads * headDim, hidden),
            Linear(prefix + "o_proj.weight", hidden, heads * headDim),
            heads, kvHeads, headDim);

        public string[] Unused() => st.Keys.Where(k => !_used.Contains(k)).OrderBy(k => k, StringComparer.Ordinal).ToArray();
    }

    /// <summary>Loads config.json and the safetensors checkpoint (single file or index + shards) of a directory.</summary>
    public static ReferenceRouterDecoupledModel Load(string dir) =>
        Load(ReferenceRouterDecoupledConfig.LoadDirectory(dir), ReferenceSafetensors.OpenDirectory(dir), $"'{dir}'");

    public static ReferenceRouterDecoupledModel Load(ReferenceRouterDecoupledConfig c, ReferenceSafetensors tensors, string origin = "(in memory)")
    {
        ArgumentNullException.ThrowIfNull(c);
        ArgumentNullException.ThrowIfNull(tensors);
        int h = c.HiddenSize, v = c.VocabSize, e = c.NumExperts, hr = c.RouterHiddenSize;
        var src = new Source(tensors, origin);

        double[] embed = src.Take("model.embed_tokens.weight", v, h);
        // Tied: the embedding is the head (HF's tie_weights makes lm_head the embedding even if the file has both;
        // a stray lm_head.weight then shows up in UnusedTensorNames). Untied: lm_head.weight is required.
        double[] lmHead = c.TieWordEmbeddings ? embed : src.Take("lm_head.weight", v, h);
        double[] finalNorm = src.Take("model.norm.weight", h);

        var layers = new BackboneLayer[c.NumHiddenLayers];
        for (int l = 0; l < layers.Length; l++)
        {
            string p = $"model.layers.{l}.";
            var experts = new Ffn[e];
            for (int j = 0; j < e; j++)
                experts[j] = src.Ffn($"{p}mlp.experts.{j}.", h, c.MoeIntermediateSize);
            layers[l] = new BackboneLayer(
                src.Take(p + "input_layernorm.weight", h),
                src.Take(p + "post_attention_layernorm.weight", h),
                src.Attn(p + "self_attn.", h, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim),
                experts,
                c.SharedExpertIntermediateSize > 0 ? src.Ffn(p + "mlp.shared_expert.", h, c.SharedExpertIntermediateSize) : null);
        }

        double[] routerEmbed = src.Take("router.embed_tokens.weight", v, hr);
        var routerLayers = new RouterLayer[c.RouterNumHiddenLayers];
        for (int i = 0; i < routerLayers.Length; i++)
        {
            string p = $"router.layers.{i}.";
            routerLayers[i] = new RouterLayer(
                src.Take(p + "input_layernorm.weight", hr),
                src.Take(p + "post_attention_layernorm.weight", hr),
                src.Attn(p + "self_attn.", hr, c.RouterNumAttentionHeads, c.RouterNumKeyValueHeads, c.RouterHeadDim),
                src.Ffn(p + "mlp.", hr, c.RouterIntermediateSize));
        }
        double[] routerNorm = src.Take("router.norm.weight", hr);
        Linear routerHead = src.Linear("router.head.weight", e, hr);

        return new ReferenceRouterDecoupledModel(c, embed, lmHead, finalNorm, layers, routerEmbed, routerLayers, routerNorm, routerHead, src.Unused());
    }

    // ---------------------------------------------------------------- forward

    /// <summary>
    /// Appends <paramref name="tokens"/> at the sequence's next positions (router and backbone caches) and returns their
    /// logits [tokens.Count][V]. Per-request overrides: <paramref name="topKExperts"/> replaces num_experts_per_tok;
    /// <paramref name="disabledExperts"/> (layer, expert) pairs are never used in that layer: there the token uses the
    /// k most likely enabled experts from the same P (renormalised over the chosen ones iff norm_topk_prob). If a layer
    /// has fewer than k enabled experts, all of them are used; a layer with every expert disabled is an error (as the
    /// server's request validation has it). Invalid overrides throw before any cache is touched.
    /// </summary>
    public double[][] Forward(
        ReferenceRouterDecoupledSequence seq, IReadOnlyList<int> tokens,
        int? topKExperts = null, IReadOnlySet<(int Layer, int Expert)>? disabledExperts = null)
    {
        ArgumentNullException.ThrowIfNull(seq);
        ArgumentNullException.ThrowIfNull(tokens);
        var c = Config;
        if (seq.Router.NumLayers != c.RouterNumHiddenLayers || seq.Backbone.NumLayers != c.NumHiddenLayers)
            throw new ArgumentException("Sequence was not created for this model's layer counts.", nameof(seq));
        foreach (int t in tokens)
            if (t < 0 || t >= c.VocabSize)
                throw new ArgumentOutOfRangeException(nameof(tokens), $"Token {t} outside [0, {c.VocabSize}).");
        int k = topKExperts ?? c.NumExpertsPerTok;
        if (k < 1 || k > c.NumExperts)
            throw new ArgumentOutOfRangeException(nameof(topKExperts), $"top_k_experts {k} outside [1, {c.NumExperts}].");
        bool[][] disabled = DisabledMask(disabledExperts);

        int n = tokens.Count, numLayers = c.NumHiddenLayers;
        var routing = new int[numLayers][][];
        var routingWeights = new double[numLayers][][];
        for (int l = 0; l < numLayers; l++)
        {
            routing[l] = new int[n][];
            routingWeights[l] = new double[n][];
        }
        var routerLogits = new double[n][];
        var routerProbs = new double[n][];
        var logits = new double[n][];

        for (int i = 0; i < n; i++)
        {
            int token = tokens[i];
            int pos = seq.Length;

            // Router first: it only needs the token id and its own cache.
            double[] z = RouterStep(seq.Router, token, pos);
            double[] p = ReferenceModel.Softmax(z);
            routerLogits[i] = z;
            routerProbs[i] = p;
            for (int l = 0; l < numLayers; l++)
            {
                var (experts, weights) = PickExperts(p, k, disabled[l], c.NormTopKProb);
                routing[l][i] = experts;
                routingWeights[l][i] = weights;
            }

            logits[i] = BackboneStep(seq.Backbone, token, pos, routing, routingWeights, i);
        }

        LastRouting = routing;
        LastRoutingWeights = routingWeights;
        LastRouterLogits = routerLogits;
        LastRouterProbabilities = routerProbs;
        return logits;
    }

    /// <summary>
    /// The router alone over <paramref name="tokens"/> from position 0 on a fresh router cache (lookahead: what the
    /// experts will be before any backbone layer runs). Returns P [token][E]; touches no sequence and no Last* property.
    /// </summary>
    public double[][] RouteTokens(IReadOnlyList<int> tokens)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        var cache = new ReferenceSequence(Config.RouterNumHiddenLayers);
        var result = new double[tokens.Count][];
        for (int i = 0; i < tokens.Count; i++)
        {
            if (tokens[i] < 0 || tokens[i] >= Config.VocabSize)
                throw new ArgumentOutOfRangeException(nameof(tokens), $"Token {tokens[i]} outside [0, {Config.VocabSize}).");
            result[i] = ReferenceModel.Softmax(RouterStep(cache, tokens[i], i));
        }
        return result;
    }

    /// <summary>
    /// The spec's pick: the k indices of largest P among the enabled ones, ties to the lower index, in descending order
    /// of P; weights P[expert], divided by their sum when <paramref name="normTopKProb"/>. Fewer enabled than k: all enabled.
    /// </summary>
    public static (int[] Experts, double[] Weights) PickExperts(ReadOnlySpan<double> p, int k, bool[]? disabled, bool normTopKProb)
    {
        var chosen = new bool[p.Length];
        var picked = new List<int>(k);
        for (int j = 0; j < k; j++)
        {
            int best = -1;
            for (int x = 0; x < p.Length; x++) // scanning upward with a strict '>' keeps the lower index on ties
                if (!(disabled?[x] ?? false) && !chosen[x] && (best < 0 || p[x] > p[best]))
                    best = x;
            if (best < 0)
                break;
            chosen[best] = true;
            picked.Add(best);
        }
        int[] experts = picked.ToArray();
        var weights = new double[experts.Length];
        for (int j = 0; j < experts.Length; j++)
            weights[j] = p[experts[j]];
        if (normTopKProb)
        {
            double sum = weights.Sum();
            for (int j = 0; j < weights.Length; j++)
                weights[j] /= sum;
        }
        return (experts, weights);
    }

    private bool[][] DisabledMask(IReadOnlySet<(int Layer, int Expert)>? disabledExperts)
    {
        var c = Config;
        var mask = new bool[c.NumHiddenLayers][];
        for (int l = 0; l < mask.Length; l++)
            mask[l] = new bool[c.NumExperts];
        if (disabledExperts is null)
            return mask;
        foreach (var (layer, expert) in disabledExperts)
        {
            if (layer < 0 || layer >= c.NumHiddenLayers)
                throw new ArgumentOutOfRangeException(nameof(disabledExperts), $"disabled_experts: layer {layer} outside [0, {c.NumHiddenLayers}).");
            if (expert < 0 || expert >= c.NumExperts)
                throw new ArgumentOutOfRangeException(nameof(disabledExperts), $"disabled_experts: expert {expert} outside [0, {c.NumExperts}).");
            mask[layer][expert] = true;
        }
        for (int l = 0; l < mask.Length; l++)
            if (mask[l].All(d => d))
                throw new ArgumentException($"disabled_experts: all {c.NumExperts} experts of layer {l} are disabled.", nameof(disabledExperts));
        return mask;
    }

    /// <summary>One token through the router at <paramref name="pos"/>; appends to and advances <paramref name="cache"/>; returns z [E].</summary>
    private double[] RouterStep(ReferenceSequence cache, int token, int pos)
    {
        var c = Config;
        int hr = c.RouterHiddenSize;
        double[] r = _routerEmbed.AsSpan(token * hr, hr).ToArray();
        for (int i = 0; i < _routerLayers.Length; i++)
        {
            var layer = _routerLayers[i];
            double[] attn = Attention(layer.Attn, cache, i, pos, ReferenceModel.RmsNorm(r, layer.InputNorm, c.RmsNormEps), c.RopeTheta);
            Add(r, attn);
            Add(r, layer.Mlp.Apply(ReferenceModel.RmsNorm(r, layer.PostAttentionNorm, c.RmsNormEps)));
        }
        cache.Advance(token);
        return _routerHead.Apply(ReferenceModel.RmsNorm(r, _routerNorm, c.RmsNormEps));
    }

    /// <summary>One token through the backbone at <paramref name="pos"/> with the given routing; appends to and advances <paramref name="cache"/>.</summary>
    private double[] BackboneStep(ReferenceSequence cache, int token, int pos, int[][][] routing, double[][][] weights, int tokenIndex)
    {
        var c = Config;
        int h = c.HiddenSize;
        double[] x = _embed.AsSpan(token * h, h).ToArray();
        for (int l = 0; l < _layers.Length; l++)
        {
            var layer = _layers[l];
            Add(x, Attention(layer.Attn, cache, l, pos, ReferenceModel.RmsNorm(x, layer.InputNorm, c.RmsNormEps), c.RopeTheta));

            double[] m = ReferenceModel.RmsNorm(x, layer.PostAttentionNorm, c.RmsNormEps);
            var mlp = new double[h];
            int[] experts = routing[l][tokenIndex];
            double[] w = weights[l][tokenIndex];
            for (int j = 0; j < experts.Length; j++)
            {
                double[] y = layer.Experts[experts[j]].Apply(m);
                for (int d = 0; d < h; d++)
                    mlp[d] += w[j] * y[d];
            }
            if (layer.Shared is { } shared)
                Add(mlp, shared.Apply(m)); // permanent expert: every token, ungated
            Add(x, mlp);
        }
        cache.Advance(token);

        double[] final = ReferenceModel.RmsNorm(x, _finalNorm, c.RmsNormEps);
        var logits = new double[c.VocabSize];
        for (int t = 0; t < logits.Length; t++)
        {
            double sum = 0;
            for (int i = 0; i < h; i++)
                sum += _lmHead[t * h + i] * final[i];
            logits[t] = sum;
        }
        return logits;
    }

    /// <summary>
    /// Causal GQA attention of one position over the cache (this position included): q/k rotated by RoPE at
    /// <paramref name="pos"/>, scores scaled by 1/sqrt(head_dim), query head h reads kv head h / (heads / kvHeads).
    /// </summary>
    private static double[] Attention(Attn a, ReferenceSequence cache, int layer, int pos, double[] n, double theta)
    {
        int hd = a.HeadDim;
        double[] q = a.Q.Apply(n);
        double[] k = a.K.Apply(n);
        double[] v = a.V.Apply(n);
        for (int head = 0; head < a.Heads; head++)
            ReferenceModel.ApplyRope(q.AsSpan(head * hd, hd), pos, theta);
        for (int head = 0; head < a.KvHeads; head++)
            ReferenceModel.ApplyRope(k.AsSpan(head * hd, hd), pos, theta);

        cache.Append(layer, k, v);
        var keys = cache.Keys(layer);
        var values = cache.Values(layer);

        int group = a.Heads / a.KvHeads;
        double scale = 1.0 / Math.Sqrt(hd);
        var heads = new double[a.Heads * hd];
        var scores = new double[pos + 1];
        for (int head = 0; head < a.Heads; head++)
        {
            int kvOff = head / group * hd;
            int qOff = head * hd;
            for (int s = 0; s <= pos; s++)
            {
                double dot = 0;
                for (int d = 0; d < hd; d++)
                    dot += q[qOff + d] * keys[s][kvOff + d];
                scores[s] = dot * scale;
            }
            double[] probs = ReferenceModel.Softmax(scores);
            for (int s = 0; s <= pos; s++)
                for (int d = 0; d < hd; d++)
                    heads[qOff + d] += probs[s] * values[s][kvOff + d];
        }
        return a.O.Apply(heads);
    }

    private static void Add(double[] acc, double[] y)
    {
        for (int i = 0; i < acc.Length; i++)
            acc[i] += y[i];
    }
}
