namespace MoeServer.Kernels.Tests.Reference;

/// <summary>
/// Plain float64 reference (oracle) for mixtral, qwen2_moe, qwen3_moe and olmoe, written straight from
/// briefs/ARCH_SPEC.md with simple loops: one token at a time through every layer, attending to the
/// sequence's KV cache. Prefill is Forward with many tokens, decode is Forward with one token.
/// Not thread-safe (LastRouting is per instance).
/// </summary>
public sealed class ReferenceModel
{
    /// <summary>y = W x (+ b) with W stored [Out, In] row-major.</summary>
    internal sealed record Linear(double[] W, int Out, int In, double[]? Bias)
    {
        public double[] Apply(ReadOnlySpan<double> x)
        {
            var y = new double[Out];
            for (int o = 0; o < Out; o++)
            {
                double sum = 0;
                int row = o * In;
                for (int i = 0; i < In; i++)
                    sum += W[row + i] * x[i];
                y[o] = Bias is null ? sum : sum + Bias[o];
            }
            return y;
        }
    }

    /// <summary>Expert(x) = down(silu(gate(x)) * up(x)); also the dense and shared MLPs.</summary>
    internal sealed record Ffn(Linear Gate, Linear Up, Linear Down)
    {
        public double[] Apply(ReadOnlySpan<double> x)
        {
            double[] g = Gate.Apply(x);
            double[] u = Up.Apply(x);
            var a = new double[g.Length];
            for (int i = 0; i < a.Length; i++)
                a[i] = Silu(g[i]) * u[i];
            return Down.Apply(a);
        }
    }

    private sealed record Moe(Linear Router, Ffn[] Experts, Ffn? Shared, Linear? SharedGate);

    private sealed record Layer(
        double[] InputNorm, double[] PostAttentionNorm,
        Linear Q, Linear K, Linear V, Linear O,
        double[]? QNorm, double[]? KNorm,
        Ffn? Dense, Moe? Moe);

    private readonly double[] _embed;   // [V, H]
    private readonly double[] _lmHead;  // [V, H] (may alias _embed when tied)
    private readonly double[] _finalNorm;
    private readonly Layer[] _layers;

    public ReferenceConfig Config { get; }

    /// <summary>Checkpoint tensors the model never read (e.g. a tied lm_head, rotary buffers). Useful to spot layout surprises.</summary>
    public IReadOnlyList<string> UnusedTensorNames { get; }

    /// <summary>For the last Forward call: [layer][token] = picked expert indices in pick order (highest probability first). Empty for dense layers.</summary>
    public int[][][] LastRouting { get; private set; } = [];

    /// <summary>For the last Forward call: [layer][token] = the weights applied to LastRouting's experts (after renormalisation, if on).</summary>
    public double[][][] LastRoutingWeights { get; private set; } = [];

    private ReferenceModel(ReferenceConfig config, double[] embed, double[] lmHead, double[] finalNorm, Layer[] layers, IReadOnlyList<string> unused)
    {
        Config = config;
        _embed = embed;
        _lmHead = lmHead;
        _finalNorm = finalNorm;
        _layers = layers;
        UnusedTensorNames = unused;
    }

    public ReferenceSequence NewSequence() => new(Config.NumHiddenLayers);

    // ---------------------------------------------------------------- loading

    /// <summary>Tensor access that checks shapes and records which names were used.</summary>
    private sealed class Source(ReferenceSafetensors st)
    {
        private readonly HashSet<string> _used = new(StringComparer.Ordinal);

        public bool Has(string name) => st.ContainsKey(name);

        public double[] Take(string name, params int[] shape)
        {
            if (!st.ContainsKey(name))
                throw new InvalidDataException($"Checkpoint lacks tensor '{name}' (expected shape [{string.Join(",", shape)}]).");
            var t = st.Read(name);
            if (!t.Shape.SequenceEqual(shape))
                throw new InvalidDataException($"Tensor '{name}' has shape [{string.Join(",", t.Shape)}], expected [{string.Join(",", shape)}].");
            _used.Add(name);
            return t.Data;
        }

        public Linear Linear(string prefix, int outDim, int inDim, bool bias) =>
            new(Take(prefix + ".weight", outDim, inDim), outDim, inDim, bias ? Take(prefix + ".bias", outDim) : null);

        public string[] Unused() => st.Keys.Where(k => !_used.Contains(k)).OrderBy(k => k, StringComparer.Ordinal).ToArray();
    }

    /// <summary>Loads config.json and the safetensors checkpoint of a directory.</summary>
    public static ReferenceModel Load(string dir) =>
        Load(ReferenceConfig.LoadDirectory(dir), ReferenceSafetensors.OpenDirectory(dir));

    public static ReferenceModel Load(ReferenceConfig c, ReferenceSafetensors tensors)
    {
        int h = c.HiddenSize, nH = c.NumAttentionHeads, nKV = c.NumKeyValueHeads, hd = c.HeadDim, v = c.VocabSize;
        if (nKV <= 0 || nH % nKV != 0)
            throw new InvalidDataException($"num_attention_heads {nH} is not a multiple of num_key_value_heads {nKV}.");
        if (hd % 2 != 0)
            throw new InvalidDataException($"head_dim {hd} must be even for rotate_half RoPE.");
        if (c.SlidingWindow is < 1)
            throw new InvalidDataException($"sliding_window {c.SlidingWindow} must be >= 1.");
        if (c.NumExpertsPerTok > c.NumExperts)
            throw new InvalidDataException($"num_experts_per_tok {c.NumExpertsPerTok} > experts {c.NumExperts}.");

        var src = new Source(tensors);
        double[] embed = src.Take("model.embed_tokens.weight", v, h);
        double[] lmHead = src.Has("lm_head.weight") || !c.TieWordEmbeddings ? src.Take("lm_head.weight", v, h) : embed;
        double[] finalNorm = src.Take("model.norm.weight", h);

        var layers = new Layer[c.NumHiddenLayers];
        for (int l = 0; l < layers.Length; l++)
        {
            string p = $"model.layers.{l}.";
            string a = p + "self_attn.";
            double[]? qNorm = null, kNorm = null;
            if (c.IsOlmoe)
            {
                qNorm = src.Take(a + "q_norm.weight", nH * hd);   // over the full q width
                kNorm = src.Take(a + "k_norm.weight", nKV * hd);
            }
            else if (c.IsQwen3Moe)
            {
                qNorm = src.Take(a + "q_norm.weight", hd);        // per head
                kNorm = src.Take(a + "k_norm.weight", hd);
            }

            Ffn? dense = null;
            Moe? moe = null;
            if (c.IsSparseLayer(l))
                moe = LoadMoe(src, c, p);
            else
            {
                int di = c.DenseIntermediateSize ?? throw new InvalidDataException($"Layer {l} is dense but config has no intermediate_size.");
                dense = LoadFfn(src, p + "mlp.gate_proj", p + "mlp.up_proj", p + "mlp.down_proj", h, di);
            }

            layers[l] = new Layer(
                src.Take(p + "input_layernorm.weight", h),
                src.Take(p + "post_attention_layernorm.weight", h),
                src.Linear(a + "q_proj", nH * hd, h, c.QkvBias),
                src.Linear(a + "k_proj", nKV * hd, h, c.QkvBias),
                src.Linear(a + "v_proj", nKV * hd, h, c.QkvBias),
                src.Linear(a + "o_proj", h, nH * hd, c.OBias),
                qNorm, kNorm, dense, moe);
        }
        return new ReferenceModel(c, embed, lmHead, finalNorm, layers, src.Unused());
    }

    private static Ffn LoadFfn(Source src, string gate, string up, string down, int h, int width) =>
        new(src.Linear(gate, width, h, false), src.Linear(up, width, h, false), src.Linear(down, h, width, false));

    private static Moe LoadMoe(Source src, ReferenceConfig c, string p)
    {
        int h = c.HiddenSize, e = c.NumExperts, w = c.ExpertIntermediateSize;
        // Mixtral's classic prefix is block_sparse_moe.; transformers v5 moved it to mlp.
        string[] candidates = c.IsMixtral ? ["block_sparse_moe.", "mlp."] : ["mlp."];
        string? prefix = candidates.Select(x => p + x).FirstOrDefault(x => src.Has(x + "gate.weight"))
            ?? throw new InvalidDataException($"No router found: none of {string.Join(", ", candidates.Select(x => p + x + "gate.weight"))}.");

        var router = src.Linear(prefix + "gate", e, h, false);
        var experts = new Ffn[e];
        if (src.Has(prefix + "experts.gate_up_proj"))
        {
            // Fused v5 layout: gate_up_proj [E, 2I, H] (rows [0,I) gate, [I,2I) up), down_proj [E, H, I].
            double[] gateUp = src.Take(prefix + "experts.gate_up_proj", e, 2 * w, h);
            double[] down = src.Take(prefix + "experts.down_proj", e, h, w);
            for (int j = 0; j < e; j++)
            {
                long baseGu = (long)j * 2 * w * h;
                double[] g = gateUp.AsSpan((int)baseGu, w * h).ToArray();
                double[] u = gateUp.AsSpan((int)(baseGu + (long)w * h), w * h).ToArray();
                double[] d = down.AsSpan(j * h * w, h * w).ToArray();
                experts[j] = new Ffn(new Linear(g, w, h, null), new Linear(u, w, h, null), new Linear(d, h, w, null));
            }
        }
        else
        {
            for (int j = 0; j < e; j++)
            {
                string x = $"{prefix}experts.{j}.";
                experts[j] = c.IsMixtral
                    ? LoadFfn(src, x + "w1", x + "w3", x + "w2", h, w)
                    : LoadFfn(src, x + "gate_proj", x + "up_proj", x + "down_proj", h, w);
            }
        }

        Ffn? shared = null;
        Linear? sharedGate = null;
        if (c.SharedExpertIntermediateSize > 0)
        {
            string s = prefix + "shared_expert.";
            shared = LoadFfn(src, s + "gate_proj", s + "up_proj", s + "down_proj", h, c.SharedExpertIntermediateSize);
            sharedGate = src.Linear(prefix + "shared_expert_gate", 1, h, false);
        }
        return new Moe(router, experts, shared, sharedGate);
    }

    // ---------------------------------------------------------------- forward

    /// <summary>
    /// Appends <paramref name="tokens"/> at the sequence's next positions and returns their logits [tokens.Count][V].
    /// <paramref name="topKExperts"/> replaces num_experts_per_tok; <paramref name="disabledExperts"/> are never picked
    /// (the softmax is still over all experts; renormalisation, when on, is over the picked ones). If fewer experts
    /// are enabled than k, all enabled ones are picked.
    /// </summary>
    public double[][] Forward(ReferenceSequence seq, IReadOnlyList<int> tokens, int? topKExperts = null, IReadOnlySet<int>? disabledExperts = null)
    {
        ArgumentNullException.ThrowIfNull(seq);
        ArgumentNullException.ThrowIfNull(tokens);
        var c = Config;
        if (seq.NumLayers != c.NumHiddenLayers)
            throw new ArgumentException($"Sequence has {seq.NumLayers} layers, model has {c.NumHiddenLayers}.", nameof(seq));
        foreach (int t in tokens)
            if (t < 0 || t >= c.VocabSize)
                throw new ArgumentOutOfRangeException(nameof(tokens), $"Token {t} outside [0, {c.VocabSize}).");
        int k = topKExperts ?? c.NumExpertsPerTok;
        if (k < 1 || k > c.NumExperts)
            throw new ArgumentOutOfRangeException(nameof(topKExperts), $"top-k {k} outside [1, {c.NumExperts}].");
        var disabled = new bool[c.NumExperts];
        if (disabledExperts is not null)
            foreach (int e in disabledExperts)
            {
                if (e < 0 || e >= c.NumExperts)
                    throw new ArgumentOutOfRangeException(nameof(disabledExperts), $"Expert {e} outside [0, {c.NumExperts}).");
                disabled[e] = true;
            }

        var routing = new int[c.NumHiddenLayers][][];
        var routingWeights = new double[c.NumHiddenLayers][][];
        for (int l = 0; l < routing.Length; l++)
        {
            routing[l] = new int[tokens.Count][];
            routingWeights[l] = new double[tokens.Count][];
        }

        var logits = new double[tokens.Count][];
        for (int i = 0; i < tokens.Count; i++)
            logits[i] = ForwardToken(seq, tokens[i], k, disabled, routing, routingWeights, i);

        LastRouting = routing;
        LastRoutingWeights = routingWeights;
        return logits;
    }

    private double[] ForwardToken(ReferenceSequence seq, int token, int k, bool[] disabled, int[][][] routing, double[][][] routingWeights, int tokenIndex)
    {
        var c = Config;
        int h = c.HiddenSize;
        int pos = seq.Length;
        double[] x = _embed.AsSpan(token * h, h).ToArray();

        for (int l = 0; l < _layers.Length; l++)
        {
            var layer = _layers[l];

            // Attention block: x = x + Attn(RMSNorm(x)).
            double[] attn = Attention(layer, seq, l, pos, RmsNorm(x, layer.InputNorm, c.RmsNormEps));
            for (int i = 0; i < h; i++)
                x[i] += attn[i];

            // MLP block: x = x + Mlp(RMSNorm(x)).
            double[] m = RmsNorm(x, layer.PostAttentionNorm, c.RmsNormEps);
            double[] mlp;
            if (layer.Moe is { } moe)
            {
                mlp = MoeForward(moe, m, k, disabled, out int[] picked, out double[] weights);
                routing[l][tokenIndex] = picked;
                routingWeights[l][tokenIndex] = weights;
            }
            else
            {
                mlp = layer.Dense!.Apply(m);
                routing[l][tokenIndex] = [];
                routingWeights[l][tokenIndex] = [];
            }
            for (int i = 0; i < h; i++)
                x[i] += mlp[i];
        }
        seq.Advance(token);

        double[] final = RmsNorm(x, _finalNorm, c.RmsNormEps);
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

    private double[] Attention(Layer layer, ReferenceSequence seq, int l, int pos, double[] n)
    {
        var c = Config;
        int nH = c.NumAttentionHeads, nKV = c.NumKeyValueHeads, hd = c.HeadDim;
        double[] q = layer.Q.Apply(n);
        double[] k = layer.K.Apply(n);
        double[] v = layer.V.Apply(n);

        if (c.IsOlmoe)
        {
            q = RmsNorm(q, layer.QNorm!, c.RmsNormEps);
            k = RmsNorm(k, layer.KNorm!, c.RmsNormEps);
            if (c.ClipQkv is double clip)
            {
                Clamp(q, clip);
                Clamp(k, clip);
                Clamp(v, clip);
            }
        }
        else if (c.IsQwen3Moe)
        {
            for (int head = 0; head < nH; head++)
                RmsNormHeadInPlace(q.AsSpan(head * hd, hd), layer.QNorm!, c.RmsNormEps);
            for (int head = 0; head < nKV; head++)
                RmsNormHeadInPlace(k.AsSpan(head * hd, hd), layer.KNorm!, c.RmsNormEps);
        }

        for (int head = 0; head < nH; head++)
            ApplyRope(q.AsSpan(head * hd, hd), pos, c.RopeTheta);
        for (int head = 0; head < nKV; head++)
            ApplyRope(k.AsSpan(head * hd, hd), pos, c.RopeTheta);

        seq.Append(l, k, v);
        var keys = seq.Keys(l);
        var values = seq.Values(l);

        // Keys at positions s with pos - s < W (all of 0..pos without a window).
        int first = c.SlidingWindow is int w ? Math.Max(0, pos - w + 1) : 0;
        int group = nH / nKV;
        double scale = 1.0 / Math.Sqrt(hd);
        var heads = new double[nH * hd];
        var scores = new double[pos - first + 1];
        for (int head = 0; head < nH; head++)
        {
            int kvOff = head / group * hd;
            int qOff = head * hd;
            for (int s = first; s <= pos; s++)
            {
                double dot = 0;
                for (int d = 0; d < hd; d++)
                    dot += q[qOff + d] * keys[s][kvOff + d];
                scores[s - first] = dot * scale;
            }
            double[] probs = Softmax(scores);
            for (int s = first; s <= pos; s++)
            {
                double ps = probs[s - first];
                for (int d = 0; d < hd; d++)
                    heads[qOff + d] += ps * values[s][kvOff + d];
            }
        }
        return layer.O.Apply(heads);
    }

    private double[] MoeForward(Moe moe, double[] m, int k, bool[] disabled, out int[] picked, out double[] weights)
    {
        int e = Config.NumExperts;
        double[] p = Softmax(moe.Router.Apply(m));

        // Top-k by probability, ties to the lower index (strict > while scanning upward); disabled never picked.
        var chosen = new bool[e];
        var pickedList = new List<int>(k);
        for (int j = 0; j < k; j++)
        {
            int best = -1;
            for (int x = 0; x < e; x++)
                if (!disabled[x] && !chosen[x] && (best < 0 || p[x] > p[best]))
                    best = x;
            if (best < 0)
                break;
            chosen[best] = true;
            pickedList.Add(best);
        }
        picked = pickedList.ToArray();
        weights = picked.Select(x => p[x]).ToArray();
        if (Config.RenormalizeTopK)
        {
            double sum = weights.Sum();
            if (sum > 0)
                for (int j = 0; j < weights.Length; j++)
                    weights[j] /= sum;
        }

        var output = new double[Config.HiddenSize];
        for (int j = 0; j < picked.Length; j++)
        {
            double[] y = moe.Experts[picked[j]].Apply(m);
            for (int i = 0; i < output.Length; i++)
                output[i] += weights[j] * y[i];
        }
        if (moe.Shared is { } shared)
        {
            double gate = Sigmoid(moe.SharedGate!.Apply(m)[0]);
            double[] y = shared.Apply(m);
            for (int i = 0; i < output.Length; i++)
                output[i] += gate * y[i];
        }
        return output;
    }

    // ---------------------------------------------------------------- math helpers (public for self-tests)

    /// <summary>RMSNorm(v; w) = v / sqrt(mean(v^2) + eps) * w, mean over v's full width.</summary>
    public static double[] RmsNorm(ReadOnlySpan<double> v, ReadOnlySpan<double> w, double eps)
    {
        if (v.Length != w.Length)
            throw new ArgumentException($"RMSNorm width {v.Length} vs weight {w.Length}.");
        double ss = 0;
        foreach (double a in v)
            ss += a * a;
        double inv = 1.0 / Math.Sqrt(ss / v.Length + eps);
        var y = new double[v.Length];
        for (int i = 0; i < y.Length; i++)
            y[i] = v[i] * inv * w[i];
        return y;
    }

    private static void RmsNormHeadInPlace(Span<double> head, double[] w, double eps)
    {
        double[] y = RmsNorm(head, w, eps);
        y.CopyTo(head);
    }

    /// <summary>rotate_half RoPE of one head in place: pairs (i, i + hd/2) rotate by angle position * theta^(-2i/hd).</summary>
    public static void ApplyRope(Span<double> head, int position, double theta)
    {
        int half = head.Length / 2;
        for (int i = 0; i < half; i++)
        {
            double angle = position * Math.Pow(theta, -2.0 * i / head.Length);
            double cos = Math.Cos(angle), sin = Math.Sin(angle);
            double a = head[i], b = head[i + half];
            head[i] = a * cos - b * sin;
            head[i + half] = b * cos + a * sin;
        }
    }

    /// <summary>Numerically stable softmax (max subtracted first).</summary>
    public static double[] Softmax(ReadOnlySpan<double> z)
    {
        double max = double.NegativeInfinity;
        foreach (double a in z)
            max = Math.Max(max, a);
        var y = new double[z.Length];
        double sum = 0;
        for (int i = 0; i < y.Length; i++)
        {
            y[i] = Math.Exp(z[i] - max);
            sum += y[i];
        }
        for (int i = 0; i < y.Length; i++)
            y[i] /= sum;
        return y;
    }

    public static double Silu(double z) => z / (1.0 + Math.Exp(-z));

    public static double Sigmoid(double z) => 1.0 / (1.0 + Math.Exp(-z));

    private static void Clamp(double[] v, double limit)
    {
        for (int i = 0; i < v.Length; i++)
            v[i] = Math.Clamp(v[i], -limit, limit);
    }

    /// <summary>Largest minus second-largest logit (0 when the maximum is shared); small margins flag argmax-fragile positions.</summary>
    public static double TopTwoMargin(double[] logits)
    {
        ArgumentNullException.ThrowIfNull(logits);
        if (logits.Length < 2)
            throw new ArgumentException("Need at least two logits.", nameof(logits));
        double first = double.NegativeInfinity, second = double.NegativeInfinity;
        foreach (double a in logits)
        {
            if (a > first)
            {
                second = first;
                first = a;
            }
            else if (a > second)
                second = a;
        }
        return first - second;
    }

    /// <summary>Index of the largest logit, ties to the lower index.</summary>
    public static int Argmax(double[] logits)
    {
        ArgumentNullException.ThrowIfNull(logits);
        int best = 0;
        for (int i = 1; i < logits.Length; i++)
            if (logits[i] > logits[best])
                best = i;
        return best;
    }
}
