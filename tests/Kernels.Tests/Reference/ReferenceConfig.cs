using System.Text.Json;

namespace MoeServer.Kernels.Tests.Reference;

/// <summary>
/// config.json of the four MoE families, parsed by hand with JsonDocument (see briefs/ARCH_SPEC.md).
/// Structural sizes are required; the rest fall back to the spec's defaults (or, where the spec
/// names none, to the HF config class default for that model_type). JSON null counts as absent.
/// </summary>
public sealed class ReferenceConfig
{
    public required string ModelType { get; init; }
    public required int HiddenSize { get; init; }
    public required int NumHiddenLayers { get; init; }
    public required int NumAttentionHeads { get; init; }
    public required int NumKeyValueHeads { get; init; }
    public required int HeadDim { get; init; }
    public required double RmsNormEps { get; init; }
    public required double RopeTheta { get; init; }
    public required int VocabSize { get; init; }
    public required bool TieWordEmbeddings { get; init; }
    public int? BosTokenId { get; init; }
    public required int[] EosTokenIds { get; init; }
    public int? MaxPositionEmbeddings { get; init; }
    /// <summary>Mixtral only; null = full causal attention. Other families ignore the field.</summary>
    public int? SlidingWindow { get; init; }

    /// <summary>E: num_local_experts (mixtral) or num_experts.</summary>
    public required int NumExperts { get; init; }
    /// <summary>k: num_experts_per_tok.</summary>
    public required int NumExpertsPerTok { get; init; }
    /// <summary>Routed-expert width: intermediate_size (mixtral, olmoe) or moe_intermediate_size (qwen).</summary>
    public required int ExpertIntermediateSize { get; init; }
    /// <summary>Width of dense MLP layers (qwen2_moe/qwen3_moe intermediate_size); null when the family has none.</summary>
    public int? DenseIntermediateSize { get; init; }
    public required int DecoderSparseStep { get; init; }
    public required int[] MlpOnlyLayers { get; init; }
    public required bool NormTopKProb { get; init; }
    /// <summary>qwen2_moe shared expert width; 0 = no shared expert.</summary>
    public required int SharedExpertIntermediateSize { get; init; }
    /// <summary>olmoe only.</summary>
    public double? ClipQkv { get; init; }
    /// <summary>attention_bias as written (qwen3_moe/olmoe meaning); see QkvBias/OBias for the effective flags.</summary>
    public required bool AttentionBias { get; init; }

    public bool IsMixtral => ModelType == "mixtral";
    public bool IsQwen2Moe => ModelType == "qwen2_moe";
    public bool IsQwen3Moe => ModelType == "qwen3_moe";
    public bool IsOlmoe => ModelType == "olmoe";

    /// <summary>q/k/v projections carry a bias: qwen2_moe always; qwen3_moe/olmoe iff attention_bias; mixtral never.</summary>
    public bool QkvBias => IsQwen2Moe || ((IsQwen3Moe || IsOlmoe) && AttentionBias);

    /// <summary>o_proj carries a bias: qwen3_moe/olmoe iff attention_bias.</summary>
    public bool OBias => (IsQwen3Moe || IsOlmoe) && AttentionBias;

    /// <summary>Router weights are renormalised over the picked experts: mixtral always, others iff norm_topk_prob.</summary>
    public bool RenormalizeTopK => IsMixtral || NormTopKProb;

    /// <summary>Only qwen families have dense layers (mlp_only_layers / decoder_sparse_step).</summary>
    public bool IsSparseLayer(int layer)
    {
        if (!(IsQwen2Moe || IsQwen3Moe))
            return true;
        return !MlpOnlyLayers.Contains(layer) && NumExperts > 0 && (layer + 1) % DecoderSparseStep == 0;
    }

    public static ReferenceConfig LoadDirectory(string dir) => Parse(File.ReadAllText(Path.Combine(dir, "config.json")));

    public static ReferenceConfig Parse(string json)
    {
        using var doc = JsonDocument.Parse(json);
        var root = doc.RootElement;

        string modelType = Str(root, "model_type") ?? throw new InvalidDataException("config.json lacks model_type.");
        if (modelType is not ("mixtral" or "qwen2_moe" or "qwen3_moe" or "olmoe"))
            throw new NotSupportedException($"model_type '{modelType}' is not one of mixtral, qwen2_moe, qwen3_moe, olmoe.");

        string? act = Str(root, "hidden_act");
        if (act is not null && act != "silu")
            throw new NotSupportedException($"hidden_act '{act}' (the reference implements silu only).");
        RejectRopeScaling(root, "rope_scaling");
        RejectRopeScaling(root, "rope_parameters");

        bool mixtral = modelType == "mixtral";
        bool qwen = modelType is "qwen2_moe" or "qwen3_moe";

        int hidden = ReqInt(root, "hidden_size");
        int heads = ReqInt(root, "num_attention_heads");
        double theta = Dbl(root, "rope_theta")
            ?? (Get(root, "rope_parameters") is { ValueKind: JsonValueKind.Object } rp ? Dbl(rp, "rope_theta") : null)
            ?? 10000.0;

        return new ReferenceConfig
        {
            ModelType = modelType,
            HiddenSize = hidden,
            NumHiddenLayers = ReqInt(root, "num_hidden_layers"),
            NumAttentionHeads = heads,
            NumKeyValueHeads = Int(root, "num_key_value_heads") ?? heads,
            HeadDim = Int(root, "head_dim") ?? hidden / heads,
            // HF defaults per class: Mixtral/OLMoE 1e-5, Qwen2-MoE/Qwen3-MoE 1e-6.
            RmsNormEps = Dbl(root, "rms_norm_eps") ?? (qwen ? 1e-6 : 1e-5),
            RopeTheta = theta,
            VocabSize = ReqInt(root, "vocab_size"),
            TieWordEmbeddings = Bool(root, "tie_word_embeddings") ?? false,
            BosTokenId = Int(root, "bos_token_id"),
            EosTokenIds = IntOrList(root, "eos_token_id"),
            MaxPositionEmbeddings = Int(root, "max_position_embeddings"),
            SlidingWindow = mixtral ? Int(root, "sliding_window") : null,
            NumExperts = ReqInt(root, mixtral ? "num_local_experts" : "num_experts"),
            NumExpertsPerTok = ReqInt(root, "num_experts_per_tok"),
            ExpertIntermediateSize = ReqInt(root, qwen ? "moe_intermediate_size" : "intermediate_size"),
            DenseIntermediateSize = qwen ? Int(root, "intermediate_size") : null,
            DecoderSparseStep = qwen ? Int(root, "decoder_sparse_step") ?? 1 : 1,
            MlpOnlyLayers = qwen ? IntList(root, "mlp_only_layers") : [],
            NormTopKProb = Bool(root, "norm_topk_prob") ?? false,
            SharedExpertIntermediateSize = modelType == "qwen2_moe" ? Int(root, "shared_expert_intermediate_size") ?? 0 : 0,
            ClipQkv = modelType == "olmoe" ? Dbl(root, "clip_qkv") : null,
            AttentionBias = Bool(root, "attention_bias") ?? false,
        };
    }

    // Only plain RoPE is in the spec; refuse scaled variants rather than silently computing something else.
    private static void RejectRopeScaling(JsonElement root, string name)
    {
        if (Get(root, name) is not { ValueKind: JsonValueKind.Object } obj)
            return;
        string? type = Str(obj, "rope_type") ?? Str(obj, "type");
        if (type is not null && type != "default")
            throw new NotSupportedException($"{name}.rope_type '{type}' (the reference implements default RoPE only).");
    }

    private static JsonElement? Get(JsonElement obj, string name) =>
        obj.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

    private static string? Str(JsonElement obj, string name) => Get(obj, name)?.GetString();

    private static bool? Bool(JsonElement obj, string name) => Get(obj, name)?.GetBoolean();

    private static double? Dbl(JsonElement obj, string name) => Get(obj, name)?.GetDouble();

    private static int? Int(JsonElement obj, string name) => Get(obj, name) is { } v ? AsInt(v, name) : null;

    private static int ReqInt(JsonElement obj, string name) =>
        Int(obj, name) ?? throw new InvalidDataException($"config.json lacks required '{name}'.");

    private static int AsInt(JsonElement v, string name)
    {
        if (v.TryGetInt32(out int i))
            return i;
        double d = v.GetDouble(); // tolerate 4096.0
        if (d != Math.Floor(d) || d < int.MinValue || d > int.MaxValue)
            throw new InvalidDataException($"'{name}' = {d} is not an integer.");
        return (int)d;
    }

    private static int[] IntList(JsonElement obj, string name) =>
        Get(obj, name) is { } v ? v.EnumerateArray().Select(e => AsInt(e, name)).ToArray() : [];

    private static int[] IntOrList(JsonElement obj, string name) => Get(obj, name) switch
    {
        null => [],
        { ValueKind: JsonValueKind.Array } arr => arr.EnumerateArray().Select(e => AsInt(e, name)).ToArray(),
        { } single => [AsInt(single, name)],
    };
}
