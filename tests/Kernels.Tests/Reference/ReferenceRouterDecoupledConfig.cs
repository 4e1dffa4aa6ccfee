using System.Text.Json;

namespace MoeServer.Kernels.Tests.Reference;

/// <summary>
/// config.json of <c>readme_moe</c> (router-decoupled MoE), parsed by hand with JsonDocument straight from
/// src/Kernels/Model/ROUTER_DECOUPLED_SPEC.md. JSON null counts as absent.
/// Defaults the spec does not name follow HF Mixtral, except where noted:
/// <list type="bullet">
/// <item><c>num_key_value_heads</c> absent = num_attention_heads (HF's "None means MHA" rule; HF Mixtral's literal
/// default of 8 would be meaningless for other sizes).</item>
/// <item><c>rms_norm_eps</c> absent = 1e-5, <c>rope_theta</c> absent = 1e6, <c>tie_word_embeddings</c> absent = false
/// (HF MixtralConfig defaults).</item>
/// <item><c>shared_expert_intermediate_size</c> absent = 0 (no shared expert, as in Mixtral).</item>
/// <item>A non-null <c>sliding_window</c> is refused: the spec's attention is full causal over the cache.</item>
/// </list>
/// </summary>
public sealed class ReferenceRouterDecoupledConfig
{
    public const string ModelTypeName = "readme_moe";

    public required int VocabSize { get; init; }
    public required int HiddenSize { get; init; }
    public required int NumHiddenLayers { get; init; }
    public required int NumAttentionHeads { get; init; }
    public required int NumKeyValueHeads { get; init; }
    public required int HeadDim { get; init; }
    public required double RmsNormEps { get; init; }
    public required double RopeTheta { get; init; }
    public int? MaxPositionEmbeddings { get; init; }
    public required bool TieWordEmbeddings { get; init; }
    public int? BosTokenId { get; init; }
    public required int[] EosTokenIds { get; init; }
    public string? TorchDtype { get; init; }

    /// <summary>E: num_local_experts.</summary>
    public required int NumExperts { get; init; }
    /// <summary>k: num_experts_per_tok (default 1).</summary>
    public required int NumExpertsPerTok { get; init; }
    /// <summary>I: moe_intermediate_size.</summary>
    public required int MoeIntermediateSize { get; init; }
    /// <summary>S: shared_expert_intermediate_size; 0 = no shared expert.</summary>
    public required int SharedExpertIntermediateSize { get; init; }
    public required bool NormTopKProb { get; init; }

    /// <summary>Hr.</summary>
    public required int RouterHiddenSize { get; init; }
    /// <summary>Lr.</summary>
    public required int RouterNumHiddenLayers { get; init; }
    public required int RouterNumAttentionHeads { get; init; }
    public required int RouterNumKeyValueHeads { get; init; }
    public required int RouterHeadDim { get; init; }
    /// <summary>Ir.</summary>
    public required int RouterIntermediateSize { get; init; }

    public static ReferenceRouterDecoupledConfig LoadDirectory(string dir) =>
        Parse(File.ReadAllText(Path.Combine(dir, "config.json")));

    public static ReferenceRouterDecoupledConfig Parse(string json)
    {
        using var doc = JsonDocument.Parse(json);
        var root = doc.RootElement;

        string modelType = Str(root, "model_type") ?? throw new InvalidDataException("config.json lacks model_type.");
        if (modelType != ModelTypeName)
            throw new NotSupportedException($"model_type '{modelType}' is not '{ModelTypeName}'.");
        string? act = Str(root, "hidden_act");
        if (act is not null && act != "silu")
            throw new NotSupportedException($"hidden_act '{act}' (the reference implements silu only).");
        foreach (string name in new[] { "rope_scaling", "rope_parameters" })
            if (Get(root, name) is { ValueKind: JsonValueKind.Object } rs
                && (Str(rs, "rope_type") ?? Str(rs, "type")) is { } type && type != "default")
                throw new NotSupportedException($"{name}.rope_type '{type}' (the reference implements default RoPE only).");
        if (Get(root, "sliding_window") is not null)
            throw new NotSupportedException("sliding_window is not part of readme_moe (attention is full causal); set it to null or omit it.");

        int hidden = ReqInt(root, "hidden_size");
        int heads = ReqInt(root, "num_attention_heads");
        int rHidden = ReqInt(root, "router_hidden_size");
        int rHeads = ReqInt(root, "router_num_attention_heads");
        if (heads <= 0 || rHeads <= 0)
            throw new InvalidDataException("num_attention_heads and router_num_attention_heads must be positive.");
        double theta = Dbl(root, "rope_theta")
            ?? (Get(root, "rope_parameters") is { ValueKind: JsonValueKind.Object } rp ? Dbl(rp, "rope_theta") : null)
            ?? 1e6;

        var c = new ReferenceRouterDecoupledConfig
        {
            VocabSize = ReqInt(root, "vocab_size"),
            HiddenSize = hidden,
            NumHiddenLayers = ReqInt(root, "num_hidden_layers"),
            NumAttentionHeads = heads,
            NumKeyValueHeads = Int(root, "num_key_value_heads") ?? heads,
            HeadDim = Int(root, "head_dim") ?? hidden / heads,
            RmsNormEps = Dbl(root, "rms_norm_eps") ?? 1e-5,
            RopeTheta = theta,
            MaxPositionEmbeddings = Int(root, "max_position_embeddings"),
            TieWordEmbeddings = Bool(root, "tie_word_embeddings") ?? false,
            BosTokenId = Int(root, "bos_token_id"),
            EosTokenIds = IntOrList(root, "eos_token_id"),
            TorchDtype = Str(root, "torch_dtype"),
            NumExperts = ReqInt(root, "num_local_experts"),
            NumExpertsPerTok = Int(root, "num_experts_per_tok") ?? 1,
            MoeIntermediateSize = ReqInt(root, "moe_intermediate_size"),
            SharedExpertIntermediateSize = Int(root, "shared_expert_intermediate_size") ?? 0,
            NormTopKProb = Bool(root, "norm_topk_prob") ?? false,
            RouterHiddenSize = rHidden,
            RouterNumHiddenLayers = ReqInt(root, "router_num_hidden_layers"),
            RouterNumAttentionHeads = rHeads,
            RouterNumKeyValueHeads = ReqInt(root, "router_num_key_value_heads"),
            RouterHeadDim = Int(root, "router_head_dim") ?? rHidden / rHeads,
            RouterIntermediateSize = ReqInt(root, "router_intermediate_size"),
        };
        c.Validate();
        return c;
    }

    private void Validate()
    {
        static void Check(bool ok, string message)
        {
            if (!ok)
                throw new InvalidDataException(message);
        }

        Check(VocabSize > 0 && HiddenSize > 0 && NumHiddenLayers > 0, "vocab_size, hidden_size and num_hidden_layers must be positive.");
        Check(NumKeyValueHeads > 0 && NumAttentionHeads % NumKeyValueHeads == 0,
            $"num_attention_heads {NumAttentionHeads} is not a multiple of num_key_value_heads {NumKeyValueHeads}.");
        Check(HeadDim > 0 && HeadDim % 2 == 0, $"head_dim {HeadDim} must be positive and even (rotate_half RoPE).");
        Check(NumExperts >= 1, $"num_local_experts {NumExperts} must be >= 1.");
        Check(NumExpertsPerTok >= 1 && NumExpertsPerTok <= NumExperts,
            $"num_experts_per_tok {NumExpertsPerTok} outside [1, num_local_experts = {NumExperts}].");
        Check(MoeIntermediateSize > 0, $"moe_intermediate_size {MoeIntermediateSize} must be positive.");
        Check(SharedExpertIntermediateSize >= 0, $"shared_expert_intermediate_size {SharedExpertIntermediateSize} must be >= 0.");
        Check(RouterHiddenSize > 0 && RouterIntermediateSize > 0, "router_hidden_size and router_intermediate_size must be positive.");
        Check(RouterNumHiddenLayers >= 1, $"router_num_hidden_layers {RouterNumHiddenLayers} must be >= 1.");
        Check(RouterNumKeyValueHeads > 0 && RouterNumAttentionHeads % RouterNumKeyValueHeads == 0,
            $"router_num_attention_heads {RouterNumAttentionHeads} is not a multiple of router_num_key_value_heads {RouterNumKeyValueHeads}.");
        Check(RouterHeadDim > 0 && RouterHeadDim % 2 == 0, $"router_head_dim {RouterHeadDim} must be positive and even (rotate_half RoPE).");
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

    private static int[] IntOrList(JsonElement obj, string name) => Get(obj, name) switch
    {
        null => [],
        { ValueKind: JsonValueKind.Array } arr => arr.EnumerateArray().Select(e => AsInt(e, name)).ToArray(),
        { } single => [AsInt(single, name)],
    };
}
