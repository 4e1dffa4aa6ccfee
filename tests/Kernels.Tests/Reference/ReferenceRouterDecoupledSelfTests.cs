using System.Text.Json;

namespace MoeServer.Kernels.Tests.Reference;

/// <summary>
/// Self-tests of the readme_moe float64 oracle (<see cref="ReferenceRouterDecoupledModel"/>): hand-computed routing and
/// forwards, cross-checks against the separately written mixtral oracle, and invariants that a wrong formula breaks.
/// </summary>
public class ReferenceRouterDecoupledSelfTests
{
    private static readonly int[] Prompt = [5, 17, 3, 42, 8, 17, 60, 1, 33, 17, 9, 27];

    // ------------------------------------------------------------ helpers

    private static void AssertLogitsEqual(double[][] expected, double[][] actual, double tol)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
        {
            Assert.Equal(expected[i].Length, actual[i].Length);
            for (int j = 0; j < expected[i].Length; j++)
                Assert.True(Math.Abs(expected[i][j] - actual[i][j]) <= tol,
                    $"row {i} column {j}: {expected[i][j]:R} vs {actual[i][j]:R}");
        }
    }

    private static double MaxAbsDiff(double[][] a, double[][] b) =>
        a.Zip(b).SelectMany(p => p.First.Zip(p.Second, (x, y) => Math.Abs(x - y))).Max();

    private static ReferenceRouterDecoupledModel Load(RouterDecoupledTinyModel tiny, TempDir tmp, string name,
        IReadOnlyList<TestTensor>? tensors = null, string dtype = "F32", int shards = 1) =>
        ReferenceRouterDecoupledModel.Load(tiny.WriteTo(tmp.Sub(name), tensors, dtype, shards));

    private static double[][] Run(ReferenceRouterDecoupledModel model, IReadOnlyList<int> tokens) =>
        model.Forward(model.NewSequence(), tokens);

    // Independent tiny math for the hand-built forwards (deliberately not the oracle's helpers).
    private static double[] MatVec(double[] w, double[] x)
    {
        int outDim = w.Length / x.Length;
        var y = new double[outDim];
        for (int o = 0; o < outDim; o++)
            for (int i = 0; i < x.Length; i++)
                y[o] += w[o * x.Length + i] * x[i];
        return y;
    }

    private static double[] Rms(double[] v, double[] w, double eps)
    {
        double rms = Math.Sqrt(v.Select(a => a * a).Average() + eps);
        return v.Select((a, i) => a / rms * w[i]).ToArray();
    }

    private static double[] SwiGlu(RouterDecoupledTinyModel m, string prefix, double[] x)
    {
        double[] g = MatVec(m[prefix + "gate_proj.weight"].Data, x);
        double[] u = MatVec(m[prefix + "up_proj.weight"].Data, x);
        return MatVec(m[prefix + "down_proj.weight"].Data, g.Select((a, i) => a / (1 + Math.Exp(-a)) * u[i]).ToArray());
    }

    private static double[] Row(double[] matrix, int row, int width) => matrix.AsSpan(row * width, width).ToArray();

    /// <summary>
    /// Makes the router's output direction fixed: router embedding column 0 = 1 for every token, the router blocks'
    /// o_proj and down_proj zero (so r stays the embedding), head row j = a[j] * e_0. Then z_j = a[j] * n0 with
    /// n0 = norm_w[0] / rms(embedding row) &gt; 0: the experts' order is the order of a for every token.
    /// </summary>
    private static void ConstantDirectionRouter(RouterDecoupledTinyModel m, double[] a)
    {
        int hr = m.I("router_hidden_size"), e = m.I("num_local_experts");
        Assert.Equal(e, a.Length);
        double[] emb = (double[])m["router.embed_tokens.weight"].Data.Clone();
        for (int t = 0; t < emb.Length / hr; t++)
            emb[t * hr] = 1.0;
        m.Set("router.embed_tokens.weight", emb);
        for (int i = 0; i < m.I("router_num_hidden_layers"); i++)
        {
            m.Set($"router.layers.{i}.self_attn.o_proj.weight", new double[m[$"router.layers.{i}.self_attn.o_proj.weight"].Data.Length]);
            m.Set($"router.layers.{i}.mlp.down_proj.weight", new double[m[$"router.layers.{i}.mlp.down_proj.weight"].Data.Length]);
        }
        var head = new double[e * hr];
        for (int j = 0; j < e; j++)
            head[j * hr] = a[j];
        m.Set("router.head.weight", head);
    }

    /// <summary>P for a token under <see cref="ConstantDirectionRouter"/>, by hand.</summary>
    private static double[] HandRouterProbabilities(RouterDecoupledTinyModel m, double[] a, int token)
    {
        int hr = m.I("router_hidden_size");
        double eps = Convert.ToDouble(m.Config["rms_norm_eps"], System.Globalization.CultureInfo.InvariantCulture);
        double[] r = Row(m["router.embed_tokens.weight"].Data, token, hr);
        double n0 = r[0] / Math.Sqrt(r.Select(x => x * x).Average() + eps) * m["router.norm.weight"].Data[0];
        double[] ez = a.Select(aj => Math.Exp(aj * n0)).ToArray();
        return ez.Select(x => x / ez.Sum()).ToArray();
    }

    /// <summary>Rewrites k_proj/v_proj under <paramref name="prefix"/> layers so every query head has its own copy of its kv head.</summary>
    private static List<TestTensor> RepeatKvHeads(List<TestTensor> tensors, string prefix, int heads, int kvHeads, int hd)
    {
        int group = heads / kvHeads;
        return tensors.Select(t =>
        {
            if (!t.Name.StartsWith(prefix, StringComparison.Ordinal)
                || !(t.Name.EndsWith("k_proj.weight", StringComparison.Ordinal) || t.Name.EndsWith("v_proj.weight", StringComparison.Ordinal)))
                return t;
            int inDim = t.Shape[1];
            double[] data = Enumerable.Range(0, heads).SelectMany(h => t.Data.Skip(h / group * hd * inDim).Take(hd * inDim)).ToArray();
            return t with { Shape = [heads * hd, inDim], Data = data };
        }).ToList();
    }

    // ------------------------------------------------------------ config

    [Fact]
    public void Config_parses_fields_defaults_and_both_eos_forms()
    {
        var c = ReferenceRouterDecoupledConfig.Parse("""
            {"model_type":"readme_moe","vocab_size":100,"hidden_size":24,"num_hidden_layers":3,"num_attention_heads":4,
             "num_local_experts":6,"moe_intermediate_size":10,"eos_token_id":7,
             "router_hidden_size":12,"router_num_hidden_layers":1,"router_num_attention_heads":2,
             "router_num_key_value_heads":1,"router_intermediate_size":20,"sliding_window":null}
            """);
        Assert.Equal(4, c.NumKeyValueHeads);          // absent = MHA
        Assert.Equal(6, c.HeadDim);                   // H / nH
        Assert.Equal(6, c.RouterHeadDim);             // Hr / rH
        Assert.Equal(1, c.NumExpertsPerTok);          // spec default
        Assert.False(c.NormTopKProb);                 // spec default
        Assert.Equal(0, c.SharedExpertIntermediateSize);
        Assert.False(c.TieWordEmbeddings);
        Assert.Equal(1e-5, c.RmsNormEps);
        Assert.Equal(1e6, c.RopeTheta);
        Assert.Equal(new[] { 7 }, c.EosTokenIds);
        Assert.Null(c.BosTokenId);
        Assert.Equal(6, c.NumExperts);
        Assert.Equal(10, c.MoeIntermediateSize);
        Assert.Equal(1, c.RouterNumKeyValueHeads);
        Assert.Equal(20, c.RouterIntermediateSize);

        var tiny = RouterDecoupledTinyModel.Create(tweak: x =>
        {
            x["head_dim"] = 6;
            x["router_head_dim"] = 10;
            x["norm_topk_prob"] = true;
            x["tie_word_embeddings"] = true;
        });
        var d = ReferenceRouterDecoupledConfig.Parse(JsonSerializer.Serialize(tiny.Config));
        Assert.Equal(new[] { 2, 3 }, d.EosTokenIds);
        Assert.Equal(1, d.BosTokenId);
        Assert.Equal(6, d.HeadDim);
        Assert.Equal(10, d.RouterHeadDim);
        Assert.Equal(2, d.NumExpertsPerTok);
        Assert.Equal(8, d.SharedExpertIntermediateSize);
        Assert.True(d.NormTopKProb);
        Assert.True(d.TieWordEmbeddings);
        Assert.Equal(10000.0, d.RopeTheta);
        Assert.Equal(256, d.MaxPositionEmbeddings);
        Assert.Equal("float32", d.TorchDtype);
        Assert.Equal((16, 2, 4, 2, 24), (d.RouterHiddenSize, d.RouterNumHiddenLayers, d.RouterNumAttentionHeads, d.RouterNumKeyValueHeads, d.RouterIntermediateSize));
    }

    [Fact]
    public void Config_rejects_missing_router_fields_and_unsupported_settings()
    {
        string Without(string key) => JsonSerializer.Serialize(RouterDecoupledTinyModel.DefaultConfig().Where(p => p.Key != key).ToDictionary());
        string With(string key, object? value)
        {
            var cfg = RouterDecoupledTinyModel.DefaultConfig();
            cfg[key] = value;
            return JsonSerializer.Serialize(cfg);
        }

        foreach (string field in new[] { "router_hidden_size", "router_num_hidden_layers", "router_num_attention_heads",
                     "router_num_key_value_heads", "router_intermediate_size", "num_local_experts", "moe_intermediate_size" })
        {
            var ex = Assert.Throws<InvalidDataException>(() => ReferenceRouterDecoupledConfig.Parse(Without(field)));
            Assert.Contains(field, ex.Message);
        }
        Assert.Throws<NotSupportedException>(() => ReferenceRouterDecoupledConfig.Parse(With("model_type", "mixtral")));
        Assert.Throws<NotSupportedException>(() => ReferenceRouterDecoupledConfig.Parse(With("sliding_window", 4)));
        Assert.Throws<NotSupportedException>(() => ReferenceRouterDecoupledConfig.Parse(With("hidden_act", "gelu")));
        Assert.Throws<InvalidDataException>(() => ReferenceRouterDecoupledConfig.Parse(With("router_num_hidden_layers", 0)));
        Assert.Throws<InvalidDataException>(() => ReferenceRouterDecoupledConfig.Parse(With("num_experts_per_tok", 5)));
        Assert.Throws<InvalidDataException>(() => ReferenceRouterDecoupledConfig.Parse(With("router_num_key_value_heads", 3)));
        Assert.Throws<InvalidDataException>(() => ReferenceRouterDecoupledConfig.Parse(With("head_dim", 5)));
        // A null sliding_window is the same as none.
        Assert.Equal(16, ReferenceRouterDecoupledConfig.Parse(With("sliding_window", null)).RouterHiddenSize);
    }

    // ------------------------------------------------------------ expert selection

    [Fact]
    public void PickExperts_takes_the_largest_probabilities_ties_to_the_lower_index()
    {
        double[] p = [0.1, 0.3, 0.2, 0.3, 0.1];
        var (e, w) = ReferenceRouterDecoupledModel.PickExperts(p, 2, null, false);
        Assert.Equal(new[] { 1, 3 }, e);
        Assert.Equal(new[] { 0.3, 0.3 }, w);
        (e, w) = ReferenceRouterDecoupledModel.PickExperts(p, 4, null, true);
        Assert.Equal(new[] { 1, 3, 2, 0 }, e);
        AssertLogitsEqual([[1.0 / 3, 1.0 / 3, 2.0 / 9, 1.0 / 9]], [w], 1e-15);
        (e, w) = ReferenceRouterDecoupledModel.PickExperts(p, 2, [false, true, false, false, false], false);
        Assert.Equal(new[] { 3, 2 }, e);
        Assert.Equal(new[] { 0.3, 0.2 }, w);
        (e, _) = ReferenceRouterDecoupledModel.PickExperts(p, 3, [true, true, false, true, true], true);
        Assert.Equal(new[] { 2 }, e);                 // fewer enabled than k: all enabled
    }

    // ------------------------------------------------------------ invariants on the random fixture

    [Fact]
    public void Prefill_equals_token_by_token_decode_through_both_kv_caches()
    {
        using var tmp = new TempDir();
        var model = Load(RouterDecoupledTinyModel.Create(seed: 3), tmp, "m");
        Assert.Empty(model.UnusedTensorNames);

        double[][] prefill = Run(model, Prompt);
        int[][][] prefillRouting = model.LastRouting;
        double[][][] prefillWeights = model.LastRoutingWeights;
        double[][] prefillRouter = model.LastRouterLogits;

        var seq = model.NewSequence();
        var decodeRouter = new List<double[]>();
        var decode = Prompt.Select((t, i) =>
        {
            double[] logits = model.Forward(seq, [t])[0];
            decodeRouter.Add(model.LastRouterLogits[0]);
            for (int l = 0; l < model.Config.NumHiddenLayers; l++)
            {
                Assert.Equal(prefillRouting[l][i], model.LastRouting[l][0]);
                for (int j = 0; j < prefillWeights[l][i].Length; j++)
                    Assert.Equal(prefillWeights[l][i][j], model.LastRoutingWeights[l][0][j], 12);
            }
            return logits;
        }).ToArray();
        AssertLogitsEqual(prefill, decode, 1e-12);
        AssertLogitsEqual(prefillRouter, decodeRouter.ToArray(), 1e-12);
        Assert.Equal(Prompt.Length, seq.Length);
        Assert.Equal(Prompt.Length, seq.Router.Length);
        Assert.Equal(Prompt, seq.Tokens);

        var chunked = model.NewSequence();
        var parts = new[] { Prompt[..4], Prompt[4..5], Prompt[5..] }.SelectMany(c => model.Forward(chunked, c)).ToArray();
        AssertLogitsEqual(prefill, parts, 1e-12);

        var prefix = model.NewSequence();
        model.Forward(prefix, Prompt[..7]);
        var branch = prefix.Clone();
        AssertLogitsEqual(model.Forward(prefix, Prompt[7..]), model.Forward(branch, Prompt[7..]), 0);

        // Not vacuous: token 17 at positions 1, 5, 9 sees different contexts in both the router and the backbone,
        // and the router really spreads tokens over several experts.
        Assert.NotEqual(prefill[1][0], prefill[5][0]);
        Assert.NotEqual(prefillRouter[1][0], prefillRouter[9][0]);
        Assert.True(prefillRouting[0].Select(r => r[0]).Distinct().Count() >= 3);
    }

    [Fact]
    public void Router_picks_once_per_token_for_every_layer_independently_of_the_backbone()
    {
        using var tmp = new TempDir();
        var tiny = RouterDecoupledTinyModel.Create(seed: 5);
        var model = Load(tiny, tmp, "a");
        double[][] logits = Run(model, Prompt);
        var c = model.Config;

        for (int t = 0; t < Prompt.Length; t++)
        {
            double[] p = model.LastRouterProbabilities[t];
            Assert.Equal(1.0, p.Sum(), 12);
            Assert.Equal(ReferenceModel.Softmax(model.LastRouterLogits[t]), p);
            var (experts, weights) = ReferenceRouterDecoupledModel.PickExperts(p, c.NumExpertsPerTok, null, c.NormTopKProb);
            for (int l = 0; l < c.NumHiddenLayers; l++)
            {
                Assert.Equal(experts, model.LastRouting[l][t]);          // the same choice in every layer
                Assert.Equal(weights, model.LastRoutingWeights[l][t]);
            }
            Assert.Equal(c.NumExpertsPerTok, experts.Length);
            Assert.True(p[experts[0]] >= p[experts[1]]);
            Assert.Equal(p.Max(), p[experts[0]]);
        }

        // Lookahead: the router alone over the prompt gives the same P, and P of a prefix does not see later tokens.
        AssertLogitsEqual(model.LastRouterProbabilities, model.RouteTokens(Prompt), 1e-15);
        int[] altered = [.. Prompt[..6], 50, 51];
        AssertLogitsEqual(model.LastRouterProbabilities[..6], model.RouteTokens(altered)[..6], 0);

        // Changing backbone weights changes the logits but never the routing.
        var backboneChanged = tiny.Tensors.Select(t => t.Name.StartsWith("model.layers.0.", StringComparison.Ordinal)
            ? t with { Data = t.Data.Select(x => -x).ToArray() } : t).ToList();
        var other = Load(tiny, tmp, "b", backboneChanged);
        double[][] otherLogits = Run(other, Prompt);
        Assert.NotEqual(logits[^1][0], otherLogits[^1][0]);
        AssertLogitsEqual(model.LastRouterLogits, other.LastRouterLogits, 0);
        for (int l = 0; l < c.NumHiddenLayers; l++)
            for (int t = 0; t < Prompt.Length; t++)
                Assert.Equal(model.LastRouting[l][t], other.LastRouting[l][t]);
    }

    [Fact]
    public void Router_equals_a_llama_decoder_computed_by_the_mixtral_oracle()
    {
        // The router is a Llama decoder with vocabulary V and head [E, Hr]: the same as a mixtral model with one
        // expert per layer (top-1 renormalised: weight 1, the expert is the router block's dense MLP) whose lm_head has
        // the router head in rows 0..E-1. Uses a given router_head_dim (6, not Hr / rH = 4) and GQA (4 heads, 2 kv).
        using var tmp = new TempDir();
        var tiny = RouterDecoupledTinyModel.Create(seed: 7, tweak: x => x["router_head_dim"] = 6);
        var model = Load(tiny, tmp, "readme");
        Run(model, Prompt);
        var c = model.Config;
        int v = c.VocabSize, hr = c.RouterHiddenSize, e = c.NumExperts;

        var lmHead = new double[v * hr];
        Array.Copy(tiny["router.head.weight"].Data, lmHead, e * hr);
        var tensors = new List<TestTensor>
        {
            tiny["router.embed_tokens.weight"] with { Name = "model.embed_tokens.weight" },
            tiny["router.norm.weight"] with { Name = "model.norm.weight" },
            new("lm_head.weight", [v, hr], lmHead),
        };
        for (int i = 0; i < c.RouterNumHiddenLayers; i++)
        {
            string from = $"router.layers.{i}.", to = $"model.layers.{i}.";
            foreach (string name in new[] { "input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.q_proj.weight",
                         "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight" })
                tensors.Add(tiny[from + name] with { Name = to + name });
            tensors.Add(new TestTensor(to + "block_sparse_moe.gate.weight", [1, hr], new double[hr]));
            tensors.Add(tiny[from + "mlp.gate_proj.weight"] with { Name = to + "block_sparse_moe.experts.0.w1.weight" });
            tensors.Add(tiny[from + "mlp.up_proj.weight"] with { Name = to + "block_sparse_moe.experts.0.w3.weight" });
            tensors.Add(tiny[from + "mlp.down_proj.weight"] with { Name = to + "block_sparse_moe.experts.0.w2.weight" });
        }
        string dir = tmp.Sub("mixtral");
        File.WriteAllText(Path.Combine(dir, "config.json"), JsonSerializer.Serialize(new Dictionary<string, object?>
        {
            ["model_type"] = "mixtral", ["vocab_size"] = v, ["hidden_size"] = hr, ["num_hidden_layers"] = c.RouterNumHiddenLayers,
            ["num_attention_heads"] = c.RouterNumAttentionHeads, ["num_key_value_heads"] = c.RouterNumKeyValueHeads,
            ["head_dim"] = c.RouterHeadDim, ["num_local_experts"] = 1, ["num_experts_per_tok"] = 1,
            ["intermediate_size"] = c.RouterIntermediateSize, ["rms_norm_eps"] = c.RmsNormEps, ["rope_theta"] = c.RopeTheta,
            ["tie_word_embeddings"] = false, ["sliding_window"] = null,
        }));
        TestSafetensorsWriter.Write(Path.Combine(dir, "model.safetensors"), tensors);
        var llama = ReferenceModel.Load(dir);
        Assert.Empty(llama.UnusedTensorNames);
        double[][] expected = llama.Forward(llama.NewSequence(), Prompt).Select(z => z[..e]).ToArray();

        AssertLogitsEqual(expected, model.LastRouterLogits, 1e-12);
        Assert.Equal(6, c.RouterHeadDim);
    }

    [Fact]
    public void Always_winning_expert_with_top1_renormalised_equals_the_mixtral_oracle_with_that_expert()
    {
        // k = 1, norm_topk_prob, S = 0, router forced to expert 2: every backbone layer is a Llama block whose MLP is
        // expert 2 with weight exactly 1 = a one-expert mixtral. Also covers a given head_dim (6) and tied embeddings.
        using var tmp = new TempDir();
        var tiny = RouterDecoupledTinyModel.Create(seed: 8, tweak: x =>
        {
            x["num_experts_per_tok"] = 1;
            x["norm_topk_prob"] = true;
            x["shared_expert_intermediate_size"] = 0;
            x["head_dim"] = 6;
            x["tie_word_embeddings"] = true;
        });
        ConstantDirectionRouter(tiny, [0, 0, 4, 0]);
        var model = Load(tiny, tmp, "readme");
        Assert.Empty(model.UnusedTensorNames);
        double[][] logits = Run(model, Prompt);
        var c = model.Config;
        for (int l = 0; l < c.NumHiddenLayers; l++)
            for (int t = 0; t < Prompt.Length; t++)
            {
                Assert.Equal(new[] { 2 }, model.LastRouting[l][t]);
                Assert.Equal(new[] { 1.0 }, model.LastRoutingWeights[l][t]);
            }

        var tensors = new List<TestTensor> { tiny["model.embed_tokens.weight"], tiny["model.norm.weight"] };
        for (int l = 0; l < c.NumHiddenLayers; l++)
        {
            string p = $"model.layers.{l}.";
            foreach (string name in new[] { "input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.q_proj.weight",
                         "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight" })
                tensors.Add(tiny[p + name]);
            tensors.Add(new TestTensor(p + "block_sparse_moe.gate.weight", [1, c.HiddenSize], new double[c.HiddenSize]));
            tensors.Add(tiny[p + "mlp.experts.2.gate_proj.weight"] with { Name = p + "block_sparse_moe.experts.0.w1.weight" });
            tensors.Add(tiny[p + "mlp.experts.2.up_proj.weight"] with { Name = p + "block_sparse_moe.experts.0.w3.weight" });
            tensors.Add(tiny[p + "mlp.experts.2.down_proj.weight"] with { Name = p + "block_sparse_moe.experts.0.w2.weight" });
        }
        string dir = tmp.Sub("mixtral");
        File.WriteAllText(Path.Combine(dir, "config.json"), JsonSerializer.Serialize(new Dictionary<string, object?>
        {
            ["model_type"] = "mixtral", ["vocab_size"] = c.VocabSize, ["hidden_size"] = c.HiddenSize, ["num_hidden_layers"] = c.NumHiddenLayers,
            ["num_attention_heads"] = c.NumAttentionHeads, ["num_key_value_heads"] = c.NumKeyValueHeads, ["head_dim"] = c.HeadDim,
            ["num_local_experts"] = 1, ["num_experts_per_tok"] = 1, ["intermediate_size"] = c.MoeIntermediateSize,
            ["rms_norm_eps"] = c.RmsNormEps, ["rope_theta"] = c.RopeTheta, ["tie_word_embeddings"] = true, ["sliding_window"] = null,
        }));
        TestSafetensorsWriter.Write(Path.Combine(dir, "model.safetensors"), tensors);
        var mixtral = ReferenceModel.Load(dir);
        AssertLogitsEqual(mixtral.Forward(mixtral.NewSequence(), Prompt), logits, 1e-12);
    }

    public static TheoryData<int, bool, int> HandCases => new()
    {
        { 1, false, 8 }, { 2, false, 8 }, { 2, true, 0 }, { 3, true, 8 }, { 4, false, 0 },
    };

    [Theory]
    [MemberData(nameof(HandCases))]
    public void Constant_direction_router_and_one_token_forward_match_a_hand_built_computation(int k, bool norm, int shared)
    {
        // Head column a = (1, 0, 3, 2): experts ordered 2 > 3 > 0 > 1 for every token, P computed by hand.
        // Position 0 attends only to itself (softmax weight 1, RoPE the identity), so the forward is a dense
        // computation written out here with its own helpers.
        using var tmp = new TempDir();
        double[] a = [1, 0, 3, 2];
        var tiny = RouterDecoupledTinyModel.Create(seed: 12, tweak: x =>
        {
            x["num_experts_per_tok"] = k;
            x["norm_topk_prob"] = norm;
            x["shared_expert_intermediate_size"] = shared;
        });
        ConstantDirectionRouter(tiny, a);
        var model = Load(tiny, tmp, "m");
        var c = model.Config;
        int[] order = [2, 3, 0, 1];
        int[] picks = order[..k];

        foreach (int token in new[] { 9, 40 })
        {
            double[] logits = model.Forward(model.NewSequence(), [token])[0];

            double[] p = HandRouterProbabilities(tiny, a, token);
            for (int j = 0; j < p.Length; j++)
                Assert.Equal(p[j], model.LastRouterProbabilities[0][j], 14);
            double[] w = picks.Select(j => p[j]).ToArray();
            if (norm)
                w = w.Select(x => x / picks.Sum(j => p[j])).ToArray();

            double eps = c.RmsNormEps;
            int h = c.HiddenSize, hd = c.HeadDim, group = c.NumAttentionHeads / c.NumKeyValueHeads;
            double[] x = Row(tiny["model.embed_tokens.weight"].Data, token, h);
            for (int l = 0; l < c.NumHiddenLayers; l++)
            {
                string pre = $"model.layers.{l}.";
                Assert.Equal(picks, model.LastRouting[l][0]);
                for (int j = 0; j < k; j++)
                    Assert.Equal(w[j], model.LastRoutingWeights[l][0][j], 14);

                double[] n = Rms(x, tiny[pre + "input_layernorm.weight"].Data, eps);
                double[] v = MatVec(tiny[pre + "self_attn.v_proj.weight"].Data, n);
                double[] heads = Enumerable.Range(0, c.NumAttentionHeads * hd).Select(i => v[i / hd / group * hd + i % hd]).ToArray();
                double[] attn = MatVec(tiny[pre + "self_attn.o_proj.weight"].Data, heads);
                x = x.Select((xi, i) => xi + attn[i]).ToArray();

                double[] m = Rms(x, tiny[pre + "post_attention_layernorm.weight"].Data, eps);
                var delta = new double[h];
                for (int j = 0; j < k; j++)
                {
                    double[] y = SwiGlu(tiny, $"{pre}mlp.experts.{picks[j]}.", m);
                    for (int i = 0; i < h; i++)
                        delta[i] += w[j] * y[i];
                }
                if (shared > 0)
                {
                    double[] y = SwiGlu(tiny, pre + "mlp.shared_expert.", m);
                    for (int i = 0; i < h; i++)
                        delta[i] += y[i];
                }
                x = x.Select((xi, i) => xi + delta[i]).ToArray();
            }
            double[] expected = MatVec(tiny["lm_head.weight"].Data, Rms(x, tiny["model.norm.weight"].Data, eps));
            AssertLogitsEqual([expected], [logits], 1e-12);
        }
    }

    [Fact]
    public void Equal_router_logits_are_broken_toward_the_lower_expert_index()
    {
        using var tmp = new TempDir();

        // All-zero head: P uniform, so top-k is 0..k-1 with weights 1/E (or 1/k renormalised).
        var zero = RouterDecoupledTinyModel.Create(seed: 2, tweak: x => x["num_experts_per_tok"] = 3);
        zero.Set("router.head.weight", new double[zero["router.head.weight"].Data.Length]);
        var model = Load(zero, tmp, "zero");
        Run(model, Prompt[..4]);
        foreach (int[][] layer in model.LastRouting)
            Assert.All(layer, r => Assert.Equal(new[] { 0, 1, 2 }, r));
        foreach (double[][] layer in model.LastRoutingWeights)
            Assert.All(layer, w => Assert.All(w, x => Assert.Equal(0.25, x, 15)));

        // a = (1, 3, 3, 2): experts 1 and 2 tie at the top, 3 next.
        double[] a = [1, 3, 3, 2];
        var tied = RouterDecoupledTinyModel.Create(seed: 2, tweak: x => x["num_experts_per_tok"] = 1);
        ConstantDirectionRouter(tied, a);
        model = Load(tied, tmp, "tied");
        Run(model, Prompt[..4]);
        Assert.All(model.LastRouting[1], r => Assert.Equal(new[] { 1 }, r));
        double[][] ps = model.LastRouterProbabilities;
        Assert.All(ps, p => Assert.Equal(p[1], p[2]));
        model.Forward(model.NewSequence(), Prompt[..4], topKExperts: 2);
        Assert.All(model.LastRouting[0], r => Assert.Equal(new[] { 1, 2 }, r));
        model.Forward(model.NewSequence(), Prompt[..4], topKExperts: 3);
        Assert.All(model.LastRouting[1], r => Assert.Equal(new[] { 1, 2, 3 }, r));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Disabled_experts_fall_back_per_layer_to_the_next_most_likely_expert(bool norm)
    {
        // a = (1, 4, 2, 3): experts ordered 1 > 3 > 2 > 0 for every token.
        using var tmp = new TempDir();
        double[] a = [1, 4, 2, 3];
        var tiny = RouterDecoupledTinyModel.Create(seed: 4, tweak: x =>
        {
            x["num_experts_per_tok"] = 1;
            x["norm_topk_prob"] = norm;
        });
        ConstantDirectionRouter(tiny, a);
        var model = Load(tiny, tmp, "m");
        int[] tokens = Prompt[..5];
        double[][] hand = tokens.Select(t => HandRouterProbabilities(tiny, a, t)).ToArray();

        double[][] baseline = Run(model, tokens);
        double[][] baseProbs = model.LastRouterProbabilities;
        foreach (int[][] layer in model.LastRouting)
            Assert.All(layer, r => Assert.Equal(new[] { 1 }, r));

        void Expect(int layer, int[] experts)
        {
            for (int t = 0; t < tokens.Length; t++)
            {
                Assert.Equal(experts, model.LastRouting[layer][t]);
                double sum = norm ? experts.Sum(e => hand[t][e]) : 1.0;
                for (int j = 0; j < experts.Length; j++)
                    Assert.Equal(hand[t][experts[j]] / sum, model.LastRoutingWeights[layer][t][j], 14);
            }
        }

        // Layer 0 loses its favourite and falls back to the next one; layer 1 keeps expert 1.
        double[][] fallback = model.Forward(model.NewSequence(), tokens, disabledExperts: new HashSet<(int, int)> { (0, 1) });
        Expect(0, [3]);
        Expect(1, [1]);
        AssertLogitsEqual(baseProbs, model.LastRouterProbabilities, 0);   // the softmax is still over all experts
        Assert.NotEqual(baseline[^1][0], fallback[^1][0]);

        model.Forward(model.NewSequence(), tokens, disabledExperts: new HashSet<(int, int)> { (0, 1), (0, 3), (1, 2) });
        Expect(0, [2]);
        Expect(1, [1]);

        // k = 2 with the top one disabled in layer 1: (3, 2) there, (1, 3) in layer 0.
        model.Forward(model.NewSequence(), tokens, topKExperts: 2, disabledExperts: new HashSet<(int, int)> { (1, 1) });
        Expect(0, [1, 3]);
        Expect(1, [3, 2]);

        // Fewer enabled experts than k: all the enabled ones.
        model.Forward(model.NewSequence(), tokens, topKExperts: 2, disabledExperts: new HashSet<(int, int)> { (0, 1), (0, 2), (0, 3) });
        Expect(0, [0]);
        Expect(1, [1, 3]);

        // Disabling an expert that was not going to be used changes nothing at all.
        AssertLogitsEqual(baseline, model.Forward(model.NewSequence(), tokens, disabledExperts: new HashSet<(int, int)> { (1, 0), (0, 2) }), 0);
        AssertLogitsEqual(baseline, model.Forward(model.NewSequence(), tokens, disabledExperts: new HashSet<(int, int)>()), 0);
    }

    [Fact]
    public void TopK_override_changes_the_number_of_experts_and_their_weights()
    {
        using var tmp = new TempDir();
        double[] a = [1, 4, 2, 3];
        var tiny = RouterDecoupledTinyModel.Create(seed: 6, tweak: x => x["num_experts_per_tok"] = 1);
        ConstantDirectionRouter(tiny, a);
        var model = Load(tiny, tmp, "m");
        int[] tokens = Prompt[..4];

        double[][] k1 = Run(model, tokens);
        Assert.All(model.LastRouting[0], r => Assert.Equal(new[] { 1 }, r));
        AssertLogitsEqual(k1, model.Forward(model.NewSequence(), tokens, topKExperts: 1), 0);

        double[][] k3 = model.Forward(model.NewSequence(), tokens, topKExperts: 3);
        for (int t = 0; t < tokens.Length; t++)
        {
            double[] p = HandRouterProbabilities(tiny, a, tokens[t]);
            Assert.Equal(new[] { 1, 3, 2 }, model.LastRouting[1][t]);
            Assert.Equal(new[] { p[1], p[3], p[2] }.Select(x => Math.Round(x, 13)), model.LastRoutingWeights[1][t].Select(x => Math.Round(x, 13)));
        }
        Assert.NotEqual(k1[^1][0], k3[^1][0]);

        // All four experts, no renormalisation: the weights are the whole softmax.
        model.Forward(model.NewSequence(), tokens, topKExperts: 4);
        Assert.All(model.LastRouting[0], r => Assert.Equal(new[] { 1, 3, 2, 0 }, r));
        Assert.All(model.LastRoutingWeights[0], w => Assert.Equal(1.0, w.Sum(), 13));
    }

    [Fact]
    public void Invalid_overrides_are_rejected_before_any_cache_changes()
    {
        using var tmp = new TempDir();
        var model = Load(RouterDecoupledTinyModel.Create(), tmp, "m");
        var seq = model.NewSequence();
        Assert.Throws<ArgumentOutOfRangeException>(() => model.Forward(seq, [1], topKExperts: 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => model.Forward(seq, [1], topKExperts: 5));
        Assert.Throws<ArgumentOutOfRangeException>(() => model.Forward(seq, [1], disabledExperts: new HashSet<(int, int)> { (2, 0) }));
        Assert.Throws<ArgumentOutOfRangeException>(() => model.Forward(seq, [1], disabledExperts: new HashSet<(int, int)> { (0, 4) }));
        Assert.Throws<ArgumentException>(() => model.Forward(seq, [1], disabledExperts: new HashSet<(int, int)> { (1, 0), (1, 1), (1, 2), (1, 3) }));
        Assert.Throws<ArgumentOutOfRangeException>(() => model.Forward(seq, [1, 64]));
        Assert.Equal(0, seq.Length);
        Assert.Equal(0, seq.Router.Length);
        AssertLogitsEqual(Run(model, [1, 2]), model.Forward(seq, [1, 2]), 0);
    }

    // ------------------------------------------------------------ loading

    [Fact]
    public void Missing_or_misshapen_router_tensors_are_reported_by_name_and_checkpoint()
    {
        using var tmp = new TempDir();
        var tiny = RouterDecoupledTinyModel.Create();
        foreach (string name in new[] { "router.layers.1.mlp.up_proj.weight", "router.head.weight", "router.embed_tokens.weight",
                     "router.norm.weight", "model.layers.1.mlp.shared_expert.down_proj.weight", "model.layers.0.mlp.experts.3.gate_proj.weight" })
        {
            string dir = tiny.WriteTo(tmp.Sub("missing-" + name), tiny.Tensors.Where(t => t.Name != name).ToList());
            var ex = Assert.Throws<InvalidDataException>(() => ReferenceRouterDecoupledModel.Load(dir));
            Assert.Contains($"'{name}'", ex.Message);
            Assert.Contains(dir, ex.Message);
        }

        var transposed = tiny.Tensors.Select(t => t.Name == "router.head.weight" ? t with { Shape = [t.Shape[1], t.Shape[0]] } : t).ToList();
        string badDir = tiny.WriteTo(tmp.Sub("transposed"), transposed);
        var bad = Assert.Throws<InvalidDataException>(() => ReferenceRouterDecoupledModel.Load(badDir));
        Assert.Contains("'router.head.weight'", bad.Message);
        Assert.Contains("[16,4]", bad.Message);

        // A per-layer gate is not part of readme_moe: it is not read, and it is reported as unused.
        var extra = tiny.Tensors.Append(new TestTensor("model.layers.0.mlp.gate.weight", [4, 32], new double[128])).ToList();
        Assert.Equal(new[] { "model.layers.0.mlp.gate.weight" }, Load(tiny, tmp, "extra", extra).UnusedTensorNames);
    }

    [Fact]
    public void BF16_F16_F64_and_sharded_copies_of_a_bf16_exact_checkpoint_give_identical_logits()
    {
        using var tmp = new TempDir();
        var tiny = RouterDecoupledTinyModel.Create(seed: 9);
        double[][] f32 = Run(Load(tiny, tmp, "f32"), Prompt);
        foreach (string dtype in new[] { "BF16", "F16", "F64" })
            AssertLogitsEqual(f32, Run(Load(tiny, tmp, dtype, dtype: dtype), Prompt), 0);
        AssertLogitsEqual(f32, Run(Load(tiny, tmp, "sharded", shards: 3), Prompt), 0);
    }

    [Fact]
    public void BF16_copy_of_a_full_precision_checkpoint_gives_near_equal_logits()
    {
        using var tmp = new TempDir();
        var tiny = RouterDecoupledTinyModel.Create(seed: 10, quantize: false);
        var f32 = Load(tiny, tmp, "f32");
        var bf16 = Load(tiny, tmp, "bf16", dtype: "BF16");
        double[][] a = Run(f32, Prompt), b = Run(bf16, Prompt);
        double diff = MaxAbsDiff(a, b), scale = a.SelectMany(r => r).Max(Math.Abs);
        Assert.True(diff > 0, "the BF16 copy should differ slightly (weights are not bf16-exact)");
        Assert.True(diff < 0.03 * scale, $"max |F32 - BF16| = {diff} for logits up to {scale}");
        Assert.True(MaxAbsDiff(f32.LastRouterProbabilities, bf16.LastRouterProbabilities) < 0.02);
    }

    [Fact]
    public void Tied_embeddings_equal_an_explicit_lm_head_copy_and_untied_requires_lm_head()
    {
        using var tmp = new TempDir();
        var tied = RouterDecoupledTinyModel.Create(seed: 3, tweak: x => x["tie_word_embeddings"] = true);
        Assert.DoesNotContain(tied.Tensors, t => t.Name == "lm_head.weight");
        double[][] tiedLogits = Run(Load(tied, tmp, "tied"), Prompt);

        var untied = new RouterDecoupledTinyModel { Config = new(tied.Config) { ["tie_word_embeddings"] = false }, Tensors = tied.Tensors };
        var withHead = tied.Tensors.Append(tied["model.embed_tokens.weight"] with { Name = "lm_head.weight" }).ToList();
        AssertLogitsEqual(tiedLogits, Run(Load(untied, tmp, "untied", withHead), Prompt), 0);

        var ex = Assert.Throws<InvalidDataException>(() => Load(untied, tmp, "missing"));
        Assert.Contains("lm_head.weight", ex.Message);
    }

    // ------------------------------------------------------------ structure

    [Fact]
    public void Grouped_query_attention_equals_multi_head_attention_with_repeated_kv_heads_in_router_and_backbone()
    {
        using var tmp = new TempDir();
        var gqa = RouterDecoupledTinyModel.Create(seed: 21, tweak: x => x["router_head_dim"] = 6);
        var model = Load(gqa, tmp, "gqa");
        var c = model.Config;
        Assert.True(c.NumKeyValueHeads < c.NumAttentionHeads && c.RouterNumKeyValueHeads < c.RouterNumAttentionHeads);
        double[][] expected = Run(model, Prompt);
        double[][] expectedRouter = model.LastRouterLogits;

        var tensors = RepeatKvHeads(gqa.Tensors, "model.", c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim);
        tensors = RepeatKvHeads(tensors, "router.", c.RouterNumAttentionHeads, c.RouterNumKeyValueHeads, c.RouterHeadDim);
        var mha = new RouterDecoupledTinyModel
        {
            Config = new(gqa.Config) { ["num_key_value_heads"] = c.NumAttentionHeads, ["router_num_key_value_heads"] = c.RouterNumAttentionHeads },
            Tensors = tensors,
        };
        var mhaModel = Load(mha, tmp, "mha");
        AssertLogitsEqual(expected, Run(mhaModel, Prompt), 1e-12);
        AssertLogitsEqual(expectedRouter, mhaModel.LastRouterLogits, 1e-12);

        // Not vacuous: the kv heads of one group really differ from the other's.
        var k = gqa["router.layers.0.self_attn.k_proj.weight"];
        Assert.NotEqual(k.Data[0], k.Data[c.RouterHeadDim * c.RouterHiddenSize]);
    }

    [Fact]
    public void Shared_expert_is_added_ungated_and_a_zero_one_equals_no_shared_expert()
    {
        using var tmp = new TempDir();
        var withShared = RouterDecoupledTinyModel.Create(seed: 14);
        double[][] logits = Run(Load(withShared, tmp, "s8"), Prompt);

        var zeroed = withShared.Tensors.Select(t => t.Name.Contains("shared_expert.down_proj", StringComparison.Ordinal)
            ? t with { Data = new double[t.Data.Length] } : t).ToList();
        double[][] zeroLogits = Run(Load(withShared, tmp, "s8zero", zeroed), Prompt);
        var none = new RouterDecoupledTinyModel
        {
            Config = new(withShared.Config) { ["shared_expert_intermediate_size"] = 0 },
            Tensors = withShared.Tensors.Where(t => !t.Name.Contains("shared_expert", StringComparison.Ordinal)).ToList(),
        };
        var noneModel = Load(none, tmp, "s0");
        Assert.Empty(noneModel.UnusedTensorNames);
        AssertLogitsEqual(zeroLogits, Run(noneModel, Prompt), 0);
        Assert.NotEqual(logits[0][0], zeroLogits[0][0]);

        // S = 0 checkpoints that still carry shared tensors leave them unread.
        Assert.Equal(6, Load(none, tmp, "s0extra", withShared.Tensors).UnusedTensorNames.Count);
    }

    [Fact]
    public void Rope_theta_reaches_router_and_backbone_but_not_position_zero()
    {
        using var tmp = new TempDir();
        var a = Load(RouterDecoupledTinyModel.Create(seed: 15), tmp, "a");
        var b = Load(RouterDecoupledTinyModel.Create(seed: 15, tweak: x => x["rope_theta"] = 7.0), tmp, "b");
        double[][] la = Run(a, Prompt), lb = Run(b, Prompt);
        AssertLogitsEqual([la[0]], [lb[0]], 1e-13);
        AssertLogitsEqual([a.LastRouterLogits[0]], [b.LastRouterLogits[0]], 1e-13);
        Assert.NotEqual(la[^1][0], lb[^1][0], 6);
        Assert.NotEqual(a.LastRouterLogits[^1][0], b.LastRouterLogits[^1][0], 6);

        // The router alone (its own RoPE): the second of two different tokens sees the first through rotated keys.
        var ra = a.RouteTokens([7, 9]);
        var rb = b.RouteTokens([7, 9]);
        AssertLogitsEqual([ra[0]], [rb[0]], 1e-13);
        Assert.NotEqual(ra[1][0], rb[1][0], 9);
    }
}
