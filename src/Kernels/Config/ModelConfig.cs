using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace MoeServer.Kernels.Config;

/// <summary>
/// Every config.json field that changes the math of the four supported MoE families, normalised to one shape.
/// Family-specific spellings (num_local_experts vs num_experts, rope_parameters.rope_theta, ...) are resolved here.
/// </summary>
public sealed record ModelConfig
{
    public required ModelArchitecture Architecture { get; init; }
    public required int HiddenSize { get; init; }
    public required int NumLayers { get; init; }
    public required int NumHeads { get; init; }
    public required int NumKvHeads { get; init; }
    public required int HeadDim { get; init; }
    public required int VocabSize { get; init; }
    public required double RmsNormEps { get; init; }
    public required double RopeTheta { get; init; }
    public int MaxPositionEmbeddings { get; init; } = 4096;
    public int? SlidingWindow { get; init; }

    public required int NumExperts { get; init; }
    public required int NumExpertsPerToken { get; init; }
    /// <summary>Width of one routed expert's FFN.</summary>
    public required int ExpertIntermediateSize { get; init; }
    /// <summary>Width of the dense MLP in non-sparse layers (Qwen-MoE); equals the expert width elsewhere.</summary>
    public required int DenseIntermediateSize { get; init; }
    public required bool NormTopKProb { get; init; }
    /// <summary>Qwen2-MoE shared expert width (0 = none); its output is scaled by sigmoid(shared_expert_gate).</summary>
    public int SharedExpertIntermediateSize { get; init; }
    /// <summary>The decoupled router of <c>readme_moe</c> (null for layer-wise gates). Its experts apply to every
    /// layer; its shared ("permanent") expert is ungated.</summary>
    public RouterConfig? Router { get; init; }
    public int DecoderSparseStep { get; init; } = 1;
    public IReadOnlyList<int> MlpOnlyLayers { get; init; } = [];

    /// <summary>Bias on q/k/v projections.</summary>
    public bool QkvBias { get; init; }
    /// <summary>Bias on the output projection.</summary>
    public bool OutputBias { get; init; }
    public QkNormKind QkNorm { get; init; }
    public double? ClipQkv { get; init; }
    public bool TieWordEmbeddings { get; init; }
    public int? BosTokenId { get; init; }
    public IReadOnlyList<int> EosTokenIds { get; init; } = [];
    public string TorchDtype { get; init; } = "bfloat16";

    public int QWidth => NumHeads * HeadDim;
    public int KvWidth => NumKvHeads * HeadDim;

    public bool IsSparseLayer(int layer) =>
        NumExperts > 0 && !MlpOnlyLayers.Contains(layer) && (layer + 1) % DecoderSparseStep == 0;

    /// <summary>config.json of an HF checkpoint directory, or the metadata of a GGUF file.</summary>
    public static ModelConfig Load(string modelDir)
    {
        if (Formats.Gguf.GgufModel.IsGgufPath(modelDir))
        {
            using var gguf = Formats.Gguf.GgufModel.Open(modelDir);
            return gguf.Config;
        }
        string path = Path.Combine(modelDir, "config.json");
        if (!File.Exists(path))
            throw new ModelConfigException($"{path}: config.json not found");
        string text = File.ReadAllText(path);
        try
        {
            return Parse(text, path);
        }
        catch (JsonException e)
        {
            throw new ModelConfigException($"{path}: invalid JSON: {e.Message}", e);
        }
    }

    public static ModelConfig Parse(string json, string source = "config.json")
    {
        var root = JsonNode.Parse(json) as JsonObject
                   ?? throw new ModelConfigException($"{source}: top level is not a JSON object");
        var r = new FieldReader(root, source);
        string modelType = r.RequiredString("model_type");
        if (!ModelArchitectureNames.TryParse(modelType, out var arch))
            throw new ModelConfigException(
                $"{source}: unsupported model_type '{modelType}' (supported: mixtral, qwen2_moe, qwen3_moe, olmoe, readme_moe)");

        int hidden = r.RequiredInt("hidden_size");
        int heads = r.RequiredInt("num_attention_heads");
        int kvHeads = r.OptionalInt("num_key_value_heads") ?? heads;
        int headDim = r.OptionalInt("head_dim") ?? hidden / heads;
        double ropeTheta = r.OptionalDouble("rope_theta")
                           ?? r.OptionalDouble("rope_parameters", "rope_theta")
                           ?? 10000.0;
        int numExperts, topK, expertWidth, denseWidth, sharedWidth = 0, sparseStep = 1;
        bool normTopK, qkvBias, outBias;
        var qkNorm = QkNormKind.None;
        double? clip = null;
        IReadOnlyList<int> mlpOnly = [];
        RouterConfig? router = null;
        switch (arch)
        {
            case ModelArchitecture.RouterDecoupled:
                numExperts = r.RequiredInt("num_local_experts");
                topK = r.OptionalInt("num_experts_per_tok") ?? 1;
                expertWidth = denseWidth = r.RequiredInt("moe_intermediate_size");
                sharedWidth = r.OptionalInt("shared_expert_intermediate_size") ?? 0;
                normTopK = r.OptionalBool("norm_topk_prob") ?? false;
                qkvBias = outBias = false;
                int rHidden = r.RequiredInt("router_hidden_size"), rHeads = r.RequiredInt("router_num_attention_heads");
                router = new RouterConfig(
                    rHidden,
                    r.RequiredInt("router_num_hidden_layers"),
                    rHeads,
                    r.OptionalInt("router_num_key_value_heads") ?? rHeads,
                    r.OptionalInt("router_head_dim") ?? rHidden / rHeads,
                    r.RequiredInt("router_intermediate_size"));
                break;
            case ModelArchitecture.Mixtral:
                numExperts = r.RequiredInt("num_local_experts");
                topK = r.RequiredInt("num_experts_per_tok");
                expertWidth = denseWidth = r.RequiredInt("intermediate_size");
                normTopK = true; // Mixtral always renormalises the top-k weights.
                qkvBias = outBias = false;
                break;
            case ModelArchitecture.Qwen2Moe:
            case ModelArchitecture.Qwen3Moe:
                numExperts = r.RequiredInt("num_experts");
                topK = r.RequiredInt("num_experts_per_tok");
                expertWidth = r.RequiredInt("moe_intermediate_size");
                denseWidth = r.OptionalInt("intermediate_size") ?? expertWidth;
                normTopK = r.OptionalBool("norm_topk_prob") ?? false;
                sparseStep = r.OptionalInt("decoder_sparse_step") ?? 1;
                mlpOnly = r.OptionalIntList("mlp_only_layers") ?? [];
                if (arch == ModelArchitecture.Qwen2Moe)
                {
                    sharedWidth = r.OptionalInt("shared_expert_intermediate_size") ?? 0;
                    qkvBias = r.OptionalBool("qkv_bias") ?? true;
                    outBias = false;
                }
                else
                {
                    qkvBias = outBias = r.OptionalBool("attention_bias") ?? false;
                    qkNorm = QkNormKind.PerHead;
                }
                break;
            case ModelArchitecture.Olmoe:
                numExperts = r.RequiredInt("num_experts");
                topK = r.RequiredInt("num_experts_per_tok");
                expertWidth = denseWidth = r.RequiredInt("intermediate_size");
                normTopK = r.OptionalBool("norm_topk_prob") ?? false;
                qkvBias = outBias = r.OptionalBool("attention_bias") ?? false;
                qkNorm = QkNormKind.FullWidth;
                clip = r.OptionalDouble("clip_qkv");
                break;
            default:
                throw new ModelConfigException($"{source}: unsupported model_type '{modelType}'");
        }

        var cfg = new ModelConfig
        {
            Architecture = arch,
            HiddenSize = hidden,
            NumLayers = r.RequiredInt("num_hidden_layers"),
            NumHeads = heads,
            NumKvHeads = kvHeads,
            HeadDim = headDim,
            VocabSize = r.RequiredInt("vocab_size"),
            RmsNormEps = r.OptionalDouble("rms_norm_eps") ?? 1e-6,
            RopeTheta = ropeTheta,
            MaxPositionEmbeddings = r.OptionalInt("max_position_embeddings") ?? 4096,
            SlidingWindow = arch == ModelArchitecture.Mixtral ? r.OptionalInt("sliding_window") : null,
            NumExperts = numExperts,
            NumExpertsPerToken = topK,
            ExpertIntermediateSize = expertWidth,
            DenseIntermediateSize = denseWidth,
            NormTopKProb = normTopK,
            SharedExpertIntermediateSize = sharedWidth,
            Router = router,
            DecoderSparseStep = sparseStep,
            MlpOnlyLayers = mlpOnly,
            QkvBias = qkvBias,
            OutputBias = outBias,
            QkNorm = qkNorm,
            ClipQkv = clip,
            TieWordEmbeddings = r.OptionalBool("tie_word_embeddings") ?? false,
            BosTokenId = r.OptionalInt("bos_token_id"),
            EosTokenIds = r.OptionalIntOrList("eos_token_id") ?? [],
            TorchDtype = r.OptionalString("torch_dtype") ?? r.OptionalString("dtype") ?? "bfloat16",
        };
        cfg.Validate(source);
        return cfg;
    }

    private void Validate(string source)
    {
        void Check(bool ok, string what)
        {
            if (!ok) throw new ModelConfigException($"{source}: {what}");
        }

        Check(HiddenSize > 0, "hidden_size must be positive");
        Check(NumLayers > 0, "num_hidden_layers must be positive");
        Check(NumHeads > 0 && NumKvHeads > 0, "attention head counts must be positive");
        Check(NumHeads % NumKvHeads == 0, $"num_attention_heads ({NumHeads}) must be a multiple of num_key_value_heads ({NumKvHeads})");
        Check(HeadDim > 0 && HeadDim % 2 == 0, $"head_dim ({HeadDim}) must be positive and even for RoPE");
        Check(VocabSize > 0, "vocab_size must be positive");
        Check(NumExperts > 0, "the number of experts must be positive");
        Check(NumExpertsPerToken > 0 && NumExpertsPerToken <= NumExperts,
            $"num_experts_per_tok ({NumExpertsPerToken}) must be in 1..{NumExperts}");
        Check(ExpertIntermediateSize > 0, "expert intermediate size must be positive");
        Check(DecoderSparseStep > 0, "decoder_sparse_step must be positive");
        Check(RmsNormEps > 0, "rms_norm_eps must be positive");
        Check(RopeTheta > 0, "rope_theta must be positive");
        Check(SlidingWindow is null or > 0, "sliding_window must be positive");
        Check(SharedExpertIntermediateSize >= 0, "shared_expert_intermediate_size must not be negative");
        if (Router is { } rc)
        {
            Check(rc.HiddenSize > 0 && rc.NumLayers > 0 && rc.IntermediateSize > 0,
                "router_hidden_size, router_num_hidden_layers and router_intermediate_size must be positive");
            Check(rc.NumHeads > 0 && rc.NumKvHeads > 0 && rc.NumHeads % rc.NumKvHeads == 0,
                $"router_num_attention_heads ({rc.NumHeads}) must be a positive multiple of router_num_key_value_heads ({rc.NumKvHeads})");
            Check(rc.HeadDim > 0 && rc.HeadDim % 2 == 0, $"router_head_dim ({rc.HeadDim}) must be positive and even for RoPE");
        }
    }

    /// <summary>Writes the config.json an HF checkpoint of this family carries.</summary>
    public string ToJson()
    {
        var o = new JsonObject
        {
            ["architectures"] = new JsonArray(Architecture switch
            {
                ModelArchitecture.Mixtral => "MixtralForCausalLM",
                ModelArchitecture.Qwen2Moe => "Qwen2MoeForCausalLM",
                ModelArchitecture.Qwen3Moe => "Qwen3MoeForCausalLM",
                ModelArchitecture.RouterDecoupled => "ReadMeMoeForCausalLM",
                _ => "OlmoeForCausalLM",
            }),
            ["model_type"] = Architecture.ToModelType(),
            ["hidden_size"] = HiddenSize,
            ["num_hidden_layers"] = NumLayers,
            ["num_attention_heads"] = NumHeads,
            ["num_key_value_heads"] = NumKvHeads,
            ["head_dim"] = HeadDim,
            ["vocab_size"] = VocabSize,
            ["rms_norm_eps"] = RmsNormEps,
            ["rope_theta"] = RopeTheta,
            ["max_position_embeddings"] = MaxPositionEmbeddings,
            ["num_experts_per_tok"] = NumExpertsPerToken,
            ["tie_word_embeddings"] = TieWordEmbeddings,
            ["hidden_act"] = "silu",
            ["torch_dtype"] = TorchDtype,
        };
        if (BosTokenId is { } bos) o["bos_token_id"] = bos;
        if (EosTokenIds.Count == 1) o["eos_token_id"] = EosTokenIds[0];
        else if (EosTokenIds.Count > 1) o["eos_token_id"] = new JsonArray(EosTokenIds.Select(i => (JsonNode)i).ToArray());
        switch (Architecture)
        {
            case ModelArchitecture.Mixtral:
                o["num_local_experts"] = NumExperts;
                o["intermediate_size"] = ExpertIntermediateSize;
                o["sliding_window"] = SlidingWindow;
                break;
            case ModelArchitecture.Qwen2Moe:
            case ModelArchitecture.Qwen3Moe:
                o["num_experts"] = NumExperts;
                o["moe_intermediate_size"] = ExpertIntermediateSize;
                o["intermediate_size"] = DenseIntermediateSize;
                o["norm_topk_prob"] = NormTopKProb;
                o["decoder_sparse_step"] = DecoderSparseStep;
                o["mlp_only_layers"] = new JsonArray(MlpOnlyLayers.Select(i => (JsonNode)i).ToArray());
                if (Architecture == ModelArchitecture.Qwen2Moe)
                {
                    o["shared_expert_intermediate_size"] = SharedExpertIntermediateSize;
                }
                else
                {
                    o["attention_bias"] = QkvBias;
                }
                break;
            case ModelArchitecture.RouterDecoupled:
                var rc = Router ?? throw new InvalidOperationException("readme_moe needs a router config");
                o["num_local_experts"] = NumExperts;
                o["moe_intermediate_size"] = ExpertIntermediateSize;
                o["shared_expert_intermediate_size"] = SharedExpertIntermediateSize;
                o["norm_topk_prob"] = NormTopKProb;
                o["router_hidden_size"] = rc.HiddenSize;
                o["router_num_hidden_layers"] = rc.NumLayers;
                o["router_num_attention_heads"] = rc.NumHeads;
                o["router_num_key_value_heads"] = rc.NumKvHeads;
                o["router_head_dim"] = rc.HeadDim;
                o["router_intermediate_size"] = rc.IntermediateSize;
                break;
            case ModelArchitecture.Olmoe:
                o["num_experts"] = NumExperts;
                o["intermediate_size"] = ExpertIntermediateSize;
                o["norm_topk_prob"] = NormTopKProb;
                o["attention_bias"] = QkvBias;
                o["clip_qkv"] = ClipQkv;
                break;
        }
        return o.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    /// <summary>Reads typed fields and names the field and file in every error.</summary>
    private readonly struct FieldReader(JsonObject root, string source)
    {
        private JsonNode? Get(string name, string? child)
        {
            JsonNode? n = root[name];
            if (child is not null) n = n is JsonObject o ? o[child] : null;
            return n;
        }

        private static string Name(string name, string? child) => child is null ? name : $"{name}.{child}";

        public string RequiredString(string name) =>
            OptionalString(name) ?? throw new ModelConfigException($"{source}: required field '{name}' is missing");

        public string? OptionalString(string name) =>
            Get(name, null) is JsonValue v && v.TryGetValue(out string? s) ? s : null;

        public int RequiredInt(string name) =>
            OptionalInt(name) ?? throw new ModelConfigException($"{source}: required field '{name}' is missing");

        public int? OptionalInt(string name, string? child = null)
        {
            var n = Get(name, child);
            if (n is null) return null;
            if (n is JsonValue v)
            {
                if (v.TryGetValue(out int i)) return i;
                if (v.TryGetValue(out double d) && d == Math.Floor(d) && Math.Abs(d) < int.MaxValue) return (int)d;
            }
            throw new ModelConfigException($"{source}: field '{Name(name, child)}' must be an integer, got {n.ToJsonString()}");
        }

        public double? OptionalDouble(string name, string? child = null)
        {
            var n = Get(name, child);
            if (n is null) return null;
            if (n is JsonValue v)
            {
                if (v.TryGetValue(out double d)) return d;
                if (v.TryGetValue(out string? s) && double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out d)) return d;
            }
            throw new ModelConfigException($"{source}: field '{Name(name, child)}' must be a number, got {n.ToJsonString()}");
        }

        public bool? OptionalBool(string name)
        {
            var n = Get(name, null);
            if (n is null) return null;
            if (n is JsonValue v && v.TryGetValue(out bool b)) return b;
            throw new ModelConfigException($"{source}: field '{name}' must be true or false, got {n.ToJsonString()}");
        }

        public IReadOnlyList<int>? OptionalIntList(string name)
        {
            var n = Get(name, null);
            if (n is null) return null;
            if (n is JsonArray a)
            {
                var list = new List<int>(a.Count);
                foreach (var e in a)
                {
                    if (e is JsonValue ev && ev.TryGetValue(out int i)) list.Add(i);
                    else throw new ModelConfigException($"{source}: field '{name}' must be a list of integers");
                }
                return list;
            }
            throw new ModelConfigException($"{source}: field '{name}' must be a list of integers, got {n.ToJsonString()}");
        }

        public IReadOnlyList<int>? OptionalIntOrList(string name)
        {
            var n = Get(name, null);
            if (n is null) return null;
            if (n is JsonValue) return [OptionalInt(name)!.Value];
            return OptionalIntList(name);
        }
    }
}

public enum QkNormKind
{
    None,
    /// <summary>Qwen3-MoE: RMSNorm over each head's head_dim, before RoPE.</summary>
    PerHead,
    /// <summary>OLMoE: RMSNorm over the full q (nH*hd) and k (nKV*hd) widths, before splitting into heads.</summary>
    FullWidth,
}

/// <summary>The decoupled router of <c>readme_moe</c>: a small Llama-style transformer over token ids.</summary>
public sealed record RouterConfig(int HiddenSize, int NumLayers, int NumHeads, int NumKvHeads, int HeadDim, int IntermediateSize)
{
    public int QWidth => NumHeads * HeadDim;
    public int KvWidth => NumKvHeads * HeadDim;
}
