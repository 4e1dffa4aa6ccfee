using System.Globalization;
using System.Text.Json;

namespace MoeServer.Kernels.Tests.Reference;

/// <summary>
/// Small random <c>readme_moe</c> checkpoints (config.json + safetensors) with exactly the tensor names of
/// ROUTER_DECOUPLED_SPEC.md, for the reference self-tests and the parity tests. Seeded; by default every value is
/// rounded to bfloat16 (and tiny ones flushed to 0) so the same weights are exact in F32, BF16, F16 and F64 files.
/// Default sizes: V=64, H=32, L=2, 4 heads / 2 kv heads (hd 8), E=4, k=2, I=16, S=8; router Hr=16, Lr=2,
/// 4 heads / 2 kv heads (rhd 4), Ir=24. Change any config field with <c>tweak</c>; tensors follow the config.
/// </summary>
internal sealed class RouterDecoupledTinyModel
{
    public required Dictionary<string, object?> Config { get; init; }
    public required List<TestTensor> Tensors { get; init; }

    public static Dictionary<string, object?> DefaultConfig() => new()
    {
        ["model_type"] = "readme_moe",
        ["vocab_size"] = 64,
        ["hidden_size"] = 32,
        ["num_hidden_layers"] = 2,
        ["num_attention_heads"] = 4,
        ["num_key_value_heads"] = 2,
        ["rms_norm_eps"] = 1e-5,
        ["rope_theta"] = 10000.0,
        ["max_position_embeddings"] = 256,
        ["tie_word_embeddings"] = false,
        ["bos_token_id"] = 1,
        ["eos_token_id"] = new[] { 2, 3 },
        ["torch_dtype"] = "float32",
        ["hidden_act"] = "silu",
        ["num_local_experts"] = 4,
        ["num_experts_per_tok"] = 2,
        ["moe_intermediate_size"] = 16,
        ["shared_expert_intermediate_size"] = 8,
        ["norm_topk_prob"] = false,
        ["router_hidden_size"] = 16,
        ["router_num_hidden_layers"] = 2,
        ["router_num_attention_heads"] = 4,
        ["router_num_key_value_heads"] = 2,
        ["router_intermediate_size"] = 24,
    };

    /// <param name="seed">Seed of the weights.</param>
    /// <param name="tweak">Edits the config before the tensors are generated from it.</param>
    /// <param name="quantize">Round values to bfloat16 (exact in every dtype); false keeps full float64 randomness.</param>
    public static RouterDecoupledTinyModel Create(int seed = 1, Action<Dictionary<string, object?>>? tweak = null, bool quantize = true)
    {
        var cfg = DefaultConfig();
        tweak?.Invoke(cfg);
        var model = new RouterDecoupledTinyModel { Config = cfg, Tensors = [] };
        model.Generate(new Random(seed), quantize);
        return model;
    }

    public int I(string key) => Convert.ToInt32(Config[key], CultureInfo.InvariantCulture);

    public int? OptI(string key) => Config.TryGetValue(key, out var v) && v is not null ? Convert.ToInt32(v, CultureInfo.InvariantCulture) : null;

    public int HeadDim => OptI("head_dim") ?? I("hidden_size") / I("num_attention_heads");

    public int RouterHeadDim => OptI("router_head_dim") ?? I("router_hidden_size") / I("router_num_attention_heads");

    public TestTensor this[string name] => Tensors.Single(t => t.Name == name);

    /// <summary>Replaces a tensor's data in place (same shape).</summary>
    public void Set(string name, double[] data)
    {
        int i = Tensors.FindIndex(t => t.Name == name);
        if (i < 0)
            throw new KeyNotFoundException(name);
        if (Tensors[i].Data.Length != data.Length)
            throw new ArgumentException($"'{name}': {data.Length} values for shape [{string.Join(",", Tensors[i].Shape)}].");
        Tensors[i] = Tensors[i] with { Data = data };
    }

    private void Generate(Random rng, bool quantize)
    {
        int v = I("vocab_size"), h = I("hidden_size"), layers = I("num_hidden_layers");
        int nH = I("num_attention_heads"), nKV = OptI("num_key_value_heads") ?? nH, hd = HeadDim;
        int e = I("num_local_experts"), w = I("moe_intermediate_size"), s = OptI("shared_expert_intermediate_size") ?? 0;
        int hr = I("router_hidden_size"), lr = I("router_num_hidden_layers");
        int rH = I("router_num_attention_heads"), rKV = I("router_num_key_value_heads"), rhd = RouterHeadDim;
        int ir = I("router_intermediate_size");

        double Q(double x) => quantize ? TinyModel.Quantize(x) : x;
        double[] Random(int n, double scale)
        {
            var data = new double[n];
            for (int i = 0; i < n; i++)
                data[i] = Q((rng.NextDouble() * 2 - 1) * scale);
            return data;
        }
        // Linear layers: uniform +-sqrt(3/in) keeps each output at about unit variance for unit-RMS inputs.
        void Lin(string name, int outDim, int inDim, double gain = 1.0) =>
            Tensors.Add(new TestTensor(name, [outDim, inDim], Random(outDim * inDim, gain * Math.Sqrt(3.0 / inDim))));
        void Norm(string name, int n) => Tensors.Add(new TestTensor(name, [n], Random(n, 0.25).Select(x => Q(1 + x)).ToArray()));
        void Ffn(string p, int hidden, int width)
        {
            Lin(p + "gate_proj.weight", width, hidden);
            Lin(p + "up_proj.weight", width, hidden);
            Lin(p + "down_proj.weight", hidden, width, 0.5);
        }
        void Attn(string p, int hidden, int heads, int kvHeads, int headDim)
        {
            Lin(p + "q_proj.weight", heads * headDim, hidden, 2.0);
            Lin(p + "k_proj.weight", kvHeads * headDim, hidden, 2.0);
            Lin(p + "v_proj.weight", kvHeads * headDim, hidden);
            Lin(p + "o_proj.weight", hidden, heads * headDim, 0.5);
        }

        Tensors.Add(new TestTensor("model.embed_tokens.weight", [v, h], Random(v * h, 1.0)));
        Norm("model.norm.weight", h);
        if (Config.GetValueOrDefault("tie_word_embeddings") is not true)
            Lin("lm_head.weight", v, h);
        for (int l = 0; l < layers; l++)
        {
            string p = $"model.layers.{l}.";
            Norm(p + "input_layernorm.weight", h);
            Attn(p + "self_attn.", h, nH, nKV, hd);
            Norm(p + "post_attention_layernorm.weight", h);
            for (int j = 0; j < e; j++)
                Ffn($"{p}mlp.experts.{j}.", h, w);
            if (s > 0)
                Ffn(p + "mlp.shared_expert.", h, s);
        }

        Tensors.Add(new TestTensor("router.embed_tokens.weight", [v, hr], Random(v * hr, 1.0)));
        for (int i = 0; i < lr; i++)
        {
            string p = $"router.layers.{i}.";
            Norm(p + "input_layernorm.weight", hr);
            Attn(p + "self_attn.", hr, rH, rKV, rhd);
            Norm(p + "post_attention_layernorm.weight", hr);
            Ffn(p + "mlp.", hr, ir);
        }
        Norm("router.norm.weight", hr);
        Lin("router.head.weight", e, hr, 2.0); // logits of a few units: routing decisive but varied
    }

    /// <summary>Writes config.json and the checkpoint (one file, or index + <paramref name="shards"/> shards) into <paramref name="dir"/>.</summary>
    public string WriteTo(string dir, IReadOnlyList<TestTensor>? tensors = null, string dtype = "F32", int shards = 1)
    {
        File.WriteAllText(Path.Combine(dir, "config.json"), JsonSerializer.Serialize(Config));
        tensors ??= Tensors;
        if (shards == 1)
            TestSafetensorsWriter.Write(Path.Combine(dir, "model.safetensors"), tensors, dtype);
        else
            TestSafetensorsWriter.WriteSharded(dir, tensors, shards, dtype);
        return dir;
    }
}
