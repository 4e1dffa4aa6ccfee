using System.Buffers.Binary;
using System.Text;
using System.Text.Json;

namespace MoeServer.Kernels.Tests.Reference;

/// <summary>A named tensor to write into a test checkpoint (row-major).</summary>
internal sealed record TestTensor(string Name, int[] Shape, double[] Data);

/// <summary>Writes safetensors files for the reference self-tests (F64/F32/F16/BF16).</summary>
internal static class TestSafetensorsWriter
{
    public static void Write(string path, IEnumerable<TestTensor> tensors, string dtype = "F32")
    {
        var list = tensors.ToList();
        int size = dtype switch { "F64" => 8, "F32" => 4, "F16" or "BF16" => 2, _ => throw new ArgumentException(dtype) };

        var header = new Dictionary<string, object> { ["__metadata__"] = new Dictionary<string, string> { ["format"] = "pt" } };
        long offset = 0;
        foreach (var t in list)
        {
            if (t.Shape.Aggregate(1L, (a, b) => a * b) != t.Data.Length)
                throw new ArgumentException($"'{t.Name}': shape does not match data length.");
            long len = (long)t.Data.Length * size;
            header[t.Name] = new { dtype, shape = t.Shape, data_offsets = new[] { offset, offset + len } };
            offset += len;
        }
        byte[] json = Encoding.UTF8.GetBytes(JsonSerializer.Serialize(header));
        int padded = (json.Length + 7) / 8 * 8; // pad with spaces to keep data 8-byte aligned, as real writers do
        var headerBytes = new byte[padded];
        Array.Fill(headerBytes, (byte)' ');
        json.CopyTo(headerBytes, 0);

        using var fs = File.Create(path);
        Span<byte> len8 = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(len8, (ulong)padded);
        fs.Write(len8);
        fs.Write(headerBytes);
        var buf = new byte[8];
        foreach (var t in list)
            foreach (double d in t.Data)
            {
                switch (dtype)
                {
                    case "F64": BinaryPrimitives.WriteDoubleLittleEndian(buf, d); break;
                    case "F32": BinaryPrimitives.WriteSingleLittleEndian(buf, (float)d); break;
                    case "F16": BinaryPrimitives.WriteUInt16LittleEndian(buf, BitConverter.HalfToUInt16Bits((Half)d)); break;
                    default: BinaryPrimitives.WriteUInt16LittleEndian(buf, ToBF16Bits((float)d)); break;
                }
                fs.Write(buf, 0, size);
            }
    }

    /// <summary>float32 -> bfloat16 bits, round to nearest even (NaN not needed here).</summary>
    public static ushort ToBF16Bits(float f)
    {
        uint bits = BitConverter.SingleToUInt32Bits(f);
        uint rounding = 0x7FFF + ((bits >> 16) & 1);
        return (ushort)((bits + rounding) >> 16);
    }

    /// <summary>Writes index.json + `shards` shard files, tensors distributed round-robin.</summary>
    public static void WriteSharded(string dir, IReadOnlyList<TestTensor> tensors, int shards, string dtype = "F32")
    {
        var map = new Dictionary<string, string>();
        for (int s = 0; s < shards; s++)
        {
            string file = $"model-{s + 1:D5}-of-{shards:D5}.safetensors";
            var mine = tensors.Where((_, i) => i % shards == s).ToList();
            Write(Path.Combine(dir, file), mine, dtype);
            foreach (var t in mine)
                map[t.Name] = file;
        }
        var index = new { metadata = new { total_size = 0 }, weight_map = map };
        File.WriteAllText(Path.Combine(dir, "model.safetensors.index.json"), JsonSerializer.Serialize(index));
    }
}

/// <summary>Temp directory deleted on dispose.</summary>
internal sealed class TempDir : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("moe-ref-").FullName;

    public string Sub(string name) => Directory.CreateDirectory(System.IO.Path.Combine(Path, name)).FullName;

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }
}

/// <summary>
/// Small random checkpoints for each family, built in the per-expert layout and convertible to the
/// fused v5 layout. Values are rounded to bfloat16 and kept away from F16 subnormals so the same
/// weights are exact in F32, BF16 and F16 files.
/// </summary>
internal sealed class TinyModel
{
    public required string ModelType { get; init; }
    public required Dictionary<string, object?> Config { get; init; }
    public required List<TestTensor> Tensors { get; init; }

    /// <summary>Prefix of the MoE block in the per-expert layout (mixtral: block_sparse_moe.).</summary>
    public string MoePrefix => ModelType == "mixtral" ? "block_sparse_moe." : "mlp.";

    public static TinyModel Create(string modelType, int seed = 1, Action<Dictionary<string, object?>>? tweak = null)
    {
        var cfg = modelType switch
        {
            "mixtral" => new Dictionary<string, object?>
            {
                ["hidden_size"] = 8, ["num_hidden_layers"] = 2, ["num_attention_heads"] = 4, ["num_key_value_heads"] = 2,
                ["num_local_experts"] = 4, ["num_experts_per_tok"] = 2, ["intermediate_size"] = 6,
                ["sliding_window"] = null, ["rope_theta"] = 1000000.0,
            },
            "qwen2_moe" => new Dictionary<string, object?>
            {
                ["hidden_size"] = 8, ["num_hidden_layers"] = 3, ["num_attention_heads"] = 2, ["num_key_value_heads"] = 1,
                ["num_experts"] = 4, ["num_experts_per_tok"] = 2, ["moe_intermediate_size"] = 5, ["intermediate_size"] = 7,
                ["shared_expert_intermediate_size"] = 6, ["mlp_only_layers"] = new[] { 1 }, ["norm_topk_prob"] = false,
                ["sliding_window"] = 2, ["use_sliding_window"] = false, // must be ignored for qwen
            },
            "qwen3_moe" => new Dictionary<string, object?>
            {
                ["hidden_size"] = 8, ["num_hidden_layers"] = 2, ["num_attention_heads"] = 4, ["num_key_value_heads"] = 2,
                ["head_dim"] = 6, ["num_experts"] = 5, ["num_experts_per_tok"] = 2, ["moe_intermediate_size"] = 4,
                ["intermediate_size"] = 9, ["decoder_sparse_step"] = 2, ["norm_topk_prob"] = true, ["attention_bias"] = true,
                ["rope_parameters"] = new Dictionary<string, object> { ["rope_type"] = "default", ["rope_theta"] = 500.0 },
            },
            "olmoe" => new Dictionary<string, object?>
            {
                ["hidden_size"] = 8, ["num_hidden_layers"] = 2, ["num_attention_heads"] = 4, ["num_key_value_heads"] = 4,
                ["num_experts"] = 4, ["num_experts_per_tok"] = 2, ["intermediate_size"] = 5, ["clip_qkv"] = 0.3,
                ["norm_topk_prob"] = false,
            },
            _ => throw new ArgumentException(modelType),
        };
        cfg["model_type"] = modelType;
        cfg["vocab_size"] = 11;
        cfg["rms_norm_eps"] = 1e-5;
        cfg["tie_word_embeddings"] = false;
        cfg["bos_token_id"] = 1;
        cfg["eos_token_id"] = 2;
        cfg["hidden_act"] = "silu";
        tweak?.Invoke(cfg);

        var model = new TinyModel { ModelType = modelType, Config = cfg, Tensors = [] };
        model.Generate(new Random(seed));
        return model;
    }

    private int I(string key) => Convert.ToInt32(Config[key], System.Globalization.CultureInfo.InvariantCulture);

    private int? OptI(string key) => Config.TryGetValue(key, out var v) && v is not null ? Convert.ToInt32(v, System.Globalization.CultureInfo.InvariantCulture) : null;

    private void Generate(Random rng)
    {
        bool qwen = ModelType is "qwen2_moe" or "qwen3_moe";
        int h = I("hidden_size"), nH = I("num_attention_heads"), nKV = OptI("num_key_value_heads") ?? nH;
        int hd = OptI("head_dim") ?? h / nH, v = I("vocab_size"), layers = I("num_hidden_layers");
        int e = I(ModelType == "mixtral" ? "num_local_experts" : "num_experts");
        int w = I(qwen ? "moe_intermediate_size" : "intermediate_size");
        bool qkvBias = ModelType == "qwen2_moe" || (Config.TryGetValue("attention_bias", out var ab) && ab is true);
        bool oBias = ModelType != "qwen2_moe" && qkvBias;

        void Add(string name, params int[] shape) => Tensors.Add(new TestTensor(name, shape, RandomData(rng, shape, 0.5)));
        void Norm(string name, int n) => Tensors.Add(new TestTensor(name, [n], RandomData(rng, [n], 0.25).Select(x => Quantize(1 + x)).ToArray()));
        void Mlp(string p, int width, bool mixtralNames)
        {
            Add(p + (mixtralNames ? "w1" : "gate_proj") + ".weight", width, h);
            Add(p + (mixtralNames ? "w3" : "up_proj") + ".weight", width, h);
            Add(p + (mixtralNames ? "w2" : "down_proj") + ".weight", h, width);
        }

        Add("model.embed_tokens.weight", v, h);
        Norm("model.norm.weight", h);
        if (!(Config["tie_word_embeddings"] is true))
            Add("lm_head.weight", v, h);
        int[] mlpOnly = Config.TryGetValue("mlp_only_layers", out var mo) && mo is int[] arr ? arr : [];
        int step = OptI("decoder_sparse_step") ?? 1;
        for (int l = 0; l < layers; l++)
        {
            string p = $"model.layers.{l}.", a = p + "self_attn.";
            Norm(p + "input_layernorm.weight", h);
            Norm(p + "post_attention_layernorm.weight", h);
            Add(a + "q_proj.weight", nH * hd, h);
            Add(a + "k_proj.weight", nKV * hd, h);
            Add(a + "v_proj.weight", nKV * hd, h);
            Add(a + "o_proj.weight", h, nH * hd);
            if (qkvBias)
            {
                Add(a + "q_proj.bias", nH * hd);
                Add(a + "k_proj.bias", nKV * hd);
                Add(a + "v_proj.bias", nKV * hd);
            }
            if (oBias)
                Add(a + "o_proj.bias", h);
            if (ModelType == "olmoe")
            {
                Norm(a + "q_norm.weight", nH * hd);
                Norm(a + "k_norm.weight", nKV * hd);
            }
            if (ModelType == "qwen3_moe")
            {
                Norm(a + "q_norm.weight", hd);
                Norm(a + "k_norm.weight", hd);
            }

            bool sparse = !qwen || (!mlpOnly.Contains(l) && (l + 1) % step == 0);
            if (!sparse)
            {
                Mlp(p + "mlp.", I("intermediate_size"), false);
                continue;
            }
            string m = p + MoePrefix;
            Add(m + "gate.weight", e, h);
            for (int j = 0; j < e; j++)
                Mlp($"{m}experts.{j}.", w, ModelType == "mixtral");
            int shared = OptI("shared_expert_intermediate_size") ?? 0;
            if (ModelType == "qwen2_moe" && shared > 0)
            {
                Mlp(m + "shared_expert.", shared, false);
                Add(m + "shared_expert_gate.weight", 1, h);
            }
        }
    }

    private static double[] RandomData(Random rng, int[] shape, double scale)
    {
        int n = shape.Aggregate(1, (x, y) => x * y);
        var data = new double[n];
        for (int i = 0; i < n; i++)
            data[i] = Quantize((rng.NextDouble() * 2 - 1) * scale);
        return data;
    }

    /// <summary>Round to bfloat16; flush tiny values so F16 also holds them exactly.</summary>
    public static double Quantize(double x)
    {
        if (Math.Abs(x) < 1.0 / 1024)
            return 0;
        return ReferenceSafetensors.DecodeBF16(TestSafetensorsWriter.ToBF16Bits((float)x));
    }

    /// <summary>Same weights in the fused v5 layout; mixtral's block is moved to <paramref name="mixtralPrefix"/>.</summary>
    public List<TestTensor> FusedTensors(string mixtralPrefix = "mlp.")
    {
        bool mixtral = ModelType == "mixtral";
        string from = MoePrefix, to = mixtral ? mixtralPrefix : "mlp.";
        var byName = Tensors.ToDictionary(t => t.Name);
        var result = new List<TestTensor>();
        var done = new HashSet<string>();
        foreach (var t in Tensors)
        {
            if (done.Contains(t.Name))
                continue;
            int marker = t.Name.IndexOf("." + from + "experts.0.", StringComparison.Ordinal);
            if (marker >= 0)
            {
                string layer = t.Name[..(marker + 1)]; // "model.layers.{l}."
                var gates = new List<TestTensor>();
                var ups = new List<TestTensor>();
                var downs = new List<TestTensor>();
                for (int j = 0; byName.ContainsKey($"{layer}{from}experts.{j}.{(mixtral ? "w1" : "gate_proj")}.weight"); j++)
                {
                    string x = $"{layer}{from}experts.{j}.";
                    foreach (var (list, name) in new[] { (gates, mixtral ? "w1" : "gate_proj"), (ups, mixtral ? "w3" : "up_proj"), (downs, mixtral ? "w2" : "down_proj") })
                    {
                        list.Add(byName[x + name + ".weight"]);
                        done.Add(x + name + ".weight");
                    }
                }
                int e = gates.Count, w = gates[0].Shape[0], h = gates[0].Shape[1];
                var gateUp = new List<double>();
                for (int j = 0; j < e; j++)
                {
                    gateUp.AddRange(gates[j].Data);
                    gateUp.AddRange(ups[j].Data);
                }
                result.Add(new TestTensor($"{layer}{to}experts.gate_up_proj", [e, 2 * w, h], gateUp.ToArray()));
                result.Add(new TestTensor($"{layer}{to}experts.down_proj", [e, h, w], downs.SelectMany(d => d.Data).ToArray()));
                continue;
            }
            if (t.Name.Contains("." + from + "experts.", StringComparison.Ordinal))
                continue; // other experts were folded in above
            result.Add(t with { Name = t.Name.Replace("." + from, "." + to, StringComparison.Ordinal) });
        }
        return result;
    }

    /// <summary>Writes config.json and the checkpoint into <paramref name="dir"/>.</summary>
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
