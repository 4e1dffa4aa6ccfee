using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using MoeServer.Kernels.Config;

namespace MoeServer.Kernels.Formats.Gguf;

/// <summary>
/// A GGUF model as a model source: every part of a split file memory-mapped, the <c>{arch}.*</c> metadata mapped to a
/// <see cref="ModelConfig"/>, and every tensor the model needs found, type-checked and shape-checked against that
/// metadata at open, then offered under its HF name (<see cref="Tensors"/>) so the loaders that read HF checkpoints
/// read GGUF unchanged. Stacked experts (<c>blk.N.ffn_*_exps</c>) become per-expert views into the mapping (no copy);
/// the per-expert tensors of older Mixtral files map one to one. The q/k rows llama.cpp's converter permutes for arch
/// <c>llama</c> are permuted back (those two tensors per layer are copied once, on first use).
/// </summary>
public sealed partial class GgufModel : IDisposable
{
    /// <summary>Architectures served (llama only with experts).</summary>
    public static readonly IReadOnlyList<string> SupportedArchitectures = ["llama", "qwen2moe", "qwen3moe", "olmoe"];

    private readonly List<GgufMappedFile> _parts;
    private readonly Dictionary<string, (GgufTensorInfo Info, GgufMappedFile File)> _ggufTensors = new(StringComparer.Ordinal);

    /// <summary>The path the model was opened by (the first part of a split file).</summary>
    public string Path { get; }
    public IReadOnlyList<GgufMappedFile> Parts => _parts;
    public GgufMappedFile First => _parts[0];
    /// <summary><c>general.architecture</c>.</summary>
    public string Architecture { get; }
    public ModelConfig Config { get; }
    /// <summary>HF tensor name to (entry, where its bytes are); filled by <see cref="Open"/>.</summary>
    internal Dictionary<string, (TensorEntry Entry, GgufMappedFile? File, GgufTensorInfo Source, bool UnpermuteRope)> Tensors { get; } = new(StringComparer.Ordinal);

    private GgufModel(string path, List<GgufMappedFile> parts)
    {
        Path = path;
        _parts = parts;
        foreach (var p in parts)
            foreach (var name in p.TensorOrder)
                if (!_ggufTensors.TryAdd(name, (p.Tensors[name], p)))
                    throw new CheckpointFormatException(p.Path, name, $"also in {_ggufTensors[name].File.Path}");
        Architecture = First.Get("general.architecture")?.Value as string
                       ?? throw new CheckpointFormatException(path, null, "no general.architecture in the metadata");
        Config = BuildConfig();
    }

    /// <summary>Whether a model path names a GGUF file (an existing file with the .gguf extension or the GGUF magic).</summary>
    public static bool IsGgufPath(string path) =>
        File.Exists(path) && (path.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase) || GgufMappedFile.HasMagic(path));

    /// <summary>Opens a GGUF model (given the first part of a split file, all parts), maps its metadata and checks every
    /// tensor the model needs. Throws <see cref="CheckpointFormatException"/> (file, tensor, type, expected shape) or
    /// <see cref="ModelConfigException"/> for metadata the server cannot run.</summary>
    public static GgufModel Open(string path)
    {
        var parts = new List<GgufMappedFile>();
        try
        {
            var first = GgufMappedFile.Open(path);
            parts.Add(first);
            int count = IntOf(first, "split.count") ?? 1;
            if (count > 1)
            {
                var paths = PartPaths(path, count);
                int? no = IntOf(first, "split.no");
                if (no is not null and not 0)
                    throw new CheckpointFormatException(path, null, $"split.no is {no}: give the first part (…-00001-of-{count:D5}.gguf)");
                for (int i = 1; i < count; i++)
                {
                    if (!File.Exists(paths[i]))
                        throw new CheckpointFormatException(paths[i], null, $"part {i + 1} of {count} of {System.IO.Path.GetFileName(path)} is missing");
                    var part = GgufMappedFile.Open(paths[i]);
                    parts.Add(part);
                    if (IntOf(part, "split.no") is { } n && n != i)
                        throw new CheckpointFormatException(paths[i], null, $"split.no is {n}, expected {i}");
                }
                long total = parts.Sum(p => (long)p.Tensors.Count);
                if (IntOf(first, "split.tensors.count") is { } expected && expected != total)
                    throw new CheckpointFormatException(path, null, $"split.tensors.count is {expected} but the {count} parts hold {total} tensors");
            }
            var model = new GgufModel(path, parts);
            model.MapTensors();
            return model;
        }
        catch
        {
            foreach (var p in parts) p.Dispose();
            throw;
        }
    }

    /// <summary>The paths of every part of a split GGUF, from the first part's name (<c>NAME-00001-of-0000N.gguf</c>).</summary>
    public static IReadOnlyList<string> PartPaths(string firstPath, int count)
    {
        var m = SplitName().Match(System.IO.Path.GetFileName(firstPath));
        if (!m.Success)
            throw new CheckpointFormatException(firstPath, null, $"split.count is {count} but the file name is not NAME-00001-of-{count:D5}.gguf");
        if (int.Parse(m.Groups[3].Value, CultureInfo.InvariantCulture) != count)
            throw new CheckpointFormatException(firstPath, null, $"split.count is {count} but the file name says {m.Groups[3].Value} parts");
        string dir = System.IO.Path.GetDirectoryName(firstPath) ?? ".";
        return Enumerable.Range(1, count).Select(i => System.IO.Path.Combine(dir, $"{m.Groups[1].Value}-{i:D5}-of-{count:D5}.gguf")).ToList();
    }

    /// <summary>Every file of the model at <paramref name="firstPath"/> (one, or every part of a split file), without
    /// checking tensors.</summary>
    public static IReadOnlyList<string> FilePaths(string firstPath)
    {
        using var f = GgufMappedFile.Open(firstPath);
        int count = IntOf(f, "split.count") ?? 1;
        return count > 1 ? PartPaths(firstPath, count) : [firstPath];
    }

    [GeneratedRegex(@"^(.*)-(\d{5})-of-(\d{5})\.gguf$", RegexOptions.IgnoreCase)]
    private static partial Regex SplitName();

    internal static int? IntOf(GgufMappedFile f, string key) => f.Get(key) is { } v && v.Type != GgufValueType.Array && v.Type != GgufValueType.String
        ? Convert.ToInt32(v.Value, CultureInfo.InvariantCulture)
        : null;

    private GgufValue? Meta(string key) => First.Get(key);
    private int? Int(string key) => IntOf(First, key);
    /// <summary>A numeric value; a float32 is widened through its shortest decimal form (1e-5f gives 1e-5, not
    /// 9.99999974737875e-6), so a value written from config.json reads back as config.json had it.</summary>
    private double? Num(string key) => Meta(key) switch
    {
        { Type: GgufValueType.Float32 } v => double.Parse(((float)v.Value).ToString("R", CultureInfo.InvariantCulture), CultureInfo.InvariantCulture),
        { Type: not (GgufValueType.Array or GgufValueType.String or GgufValueType.Bool) } v => Convert.ToDouble(v.Value, CultureInfo.InvariantCulture),
        _ => null,
    };
    private bool? Bool(string key) => Meta(key) is { Type: GgufValueType.Bool } v ? (bool)v.Value : null;
    private string? Str(string key) => Meta(key) is { Type: GgufValueType.String } v ? (string)v.Value : null;
    private bool Has(string ggufName) => _ggufTensors.ContainsKey(ggufName);

    /// <summary>general.file_type as llama.cpp names it (ALL_F32, MOSTLY_F16, MOSTLY_BF16, ...), or null.</summary>
    public string? FileType => Int("general.file_type") switch
    {
        null => null,
        0 => "ALL_F32",
        1 => "MOSTLY_F16",
        32 => "MOSTLY_BF16",
        int t => $"file type {t}",
    };

    public int? GetInt(string key) => Int(key);
    public string? GetString(string key) => Str(key);

    /// <summary>The <c>{arch}.*</c> metadata as a config.json, parsed by <see cref="ModelConfig.Parse"/> (which checks it).</summary>
    private ModelConfig BuildConfig()
    {
        string a = Architecture;
        if (!SupportedArchitectures.Contains(a))
            throw new ModelConfigException($"{Path}: unknown architecture '{a}' (supported: {string.Join(", ", SupportedArchitectures)} with experts)");
        int Req(string key) => Int($"{a}.{key}") ?? throw new ModelConfigException($"{Path}: required metadata '{a}.{key}' is missing");
        int layers = Req("block_count"), hidden = Req("embedding_length"), heads = Req("attention.head_count");
        int experts = Int($"{a}.expert_count") ?? 0;
        if (experts <= 0)
            throw new ModelConfigException($"{Path}: architecture '{a}' without experts ({a}.expert_count missing or 0): this server runs mixture-of-experts models only");
        string? scaling = Str($"{a}.rope.scaling.type");
        double factor = Num($"{a}.rope.scaling.factor") ?? 1.0;
        if (factor != 1.0 && scaling != "none")
            throw new ModelConfigException($"{Path}: rope scaling '{scaling ?? "?"}' with factor {factor} ({a}.rope.scaling.*) is not supported");
        int? ffn = Int($"{a}.feed_forward_length"), expertFfn = Int($"{a}.expert_feed_forward_length");
        var o = new JsonObject
        {
            ["hidden_size"] = hidden,
            ["num_hidden_layers"] = layers,
            ["num_attention_heads"] = heads,
            ["num_key_value_heads"] = Int($"{a}.attention.head_count_kv") ?? heads,
            ["head_dim"] = Int($"{a}.attention.key_length") ?? hidden / heads,
            ["vocab_size"] = Int($"{a}.vocab_size")
                             ?? (_ggufTensors.TryGetValue("token_embd.weight", out var te) && te.Info.Ne.Length == 2 ? (int?)te.Info.Ne[1] : null)
                             ?? (Meta("tokenizer.ggml.tokens")?.Value as string[])?.Length
                             ?? throw new ModelConfigException($"{Path}: no {a}.vocab_size, token_embd.weight or tokenizer.ggml.tokens to give the vocabulary size"),
            ["rms_norm_eps"] = Num($"{a}.attention.layer_norm_rms_epsilon") ?? 1e-5,
            ["rope_theta"] = Num($"{a}.rope.freq_base") ?? 10000.0,
            ["max_position_embeddings"] = Int($"{a}.context_length") ?? 4096,
            ["num_experts_per_tok"] = Int($"{a}.expert_used_count") ?? throw new ModelConfigException($"{Path}: required metadata '{a}.expert_used_count' is missing"),
            ["tie_word_embeddings"] = !Has("output.weight"),
            ["torch_dtype"] = FileType switch { "ALL_F32" => "float32", "MOSTLY_F16" => "float16", _ => "bfloat16" },
        };
        if (Int("tokenizer.ggml.bos_token_id") is { } bos) o["bos_token_id"] = bos;
        var eos = new[] { Int("tokenizer.ggml.eos_token_id"), Int("tokenizer.ggml.eot_token_id"), Int("tokenizer.ggml.eom_token_id") }
            .Where(x => x is not null).Select(x => x!.Value).Distinct().ToArray();
        if (eos.Length > 0) o["eos_token_id"] = new JsonArray(eos.Select(x => (JsonNode)x).ToArray());
        bool bias = Has("blk.0.attn_q.bias");
        switch (a)
        {
            case "llama":
                o["model_type"] = "mixtral";
                o["num_local_experts"] = experts;
                o["intermediate_size"] = expertFfn ?? ffn ?? throw new ModelConfigException($"{Path}: required metadata '{a}.feed_forward_length' is missing");
                break;
            case "qwen2moe":
            case "qwen3moe":
                o["model_type"] = a == "qwen2moe" ? "qwen2_moe" : "qwen3_moe";
                o["num_experts"] = experts;
                o["moe_intermediate_size"] = expertFfn ?? throw new ModelConfigException($"{Path}: required metadata '{a}.expert_feed_forward_length' is missing");
                if (ffn is not null) o["intermediate_size"] = ffn;
                // llama.cpp renormalises qwen3moe's top-k weights and not qwen2moe's unless the file says otherwise.
                o["norm_topk_prob"] = Bool($"{a}.expert_weights_norm") ?? (a == "qwen3moe");
                if (a == "qwen2moe")
                {
                    o["qkv_bias"] = bias;
                    o["shared_expert_intermediate_size"] = Int($"{a}.expert_shared_feed_forward_length")
                        ?? (_ggufTensors.TryGetValue("blk.0.ffn_gate_shexp.weight", out var sh) ? (int)sh.Info.Ne[1] : 0);
                }
                else
                {
                    o["attention_bias"] = bias;
                }
                break;
            case "olmoe":
                o["model_type"] = "olmoe";
                o["num_experts"] = experts;
                o["intermediate_size"] = expertFfn ?? ffn ?? throw new ModelConfigException($"{Path}: required metadata '{a}.feed_forward_length' is missing");
                o["norm_topk_prob"] = Bool($"{a}.expert_weights_norm") ?? false;
                o["attention_bias"] = bias;
                if (Num($"{a}.attention.clamp_kqv") is { } clip) o["clip_qkv"] = clip;
                break;
        }
        var cfg = ModelConfig.Parse(o.ToJsonString(), Path);
        // Layers without a router are dense (ffn_gate/up/down of feed_forward_length).
        var dense = Enumerable.Range(0, layers).Where(l => !Has($"blk.{l}.ffn_gate_inp.weight")).ToList();
        if (dense.Count == layers)
            throw new CheckpointFormatException(Path, "blk.0.ffn_gate_inp.weight", $"missing in every layer, but {a}.expert_count is {experts}: no layer has a router");
        if (dense.Count > 0) cfg = cfg with { MlpOnlyLayers = dense, DenseIntermediateSize = ffn ?? cfg.DenseIntermediateSize };
        return cfg;
    }

    /// <summary>Finds, type-checks and shape-checks every tensor the config implies, under its HF name.</summary>
    private void MapTensors()
    {
        var c = Config;
        int H = c.HiddenSize, V = c.VocabSize, E = c.NumExperts, I = c.ExpertIntermediateSize;
        bool llama = Architecture == "llama";
        Map("token_embd.weight", "model.embed_tokens.weight", [V, H]);
        for (int l = 0; l < c.NumLayers; l++)
        {
            string b = $"blk.{l}.", p = $"model.layers.{l}.";
            Map(b + "attn_norm.weight", p + "input_layernorm.weight", [H]);
            Map(b + "attn_q.weight", p + "self_attn.q_proj.weight", [c.QWidth, H], unpermute: llama);
            Map(b + "attn_k.weight", p + "self_attn.k_proj.weight", [c.KvWidth, H], unpermute: llama);
            Map(b + "attn_v.weight", p + "self_attn.v_proj.weight", [c.KvWidth, H]);
            Map(b + "attn_output.weight", p + "self_attn.o_proj.weight", [H, c.QWidth]);
            if (c.QkvBias)
            {
                Map(b + "attn_q.bias", p + "self_attn.q_proj.bias", [c.QWidth], unpermute: llama);
                Map(b + "attn_k.bias", p + "self_attn.k_proj.bias", [c.KvWidth], unpermute: llama);
                Map(b + "attn_v.bias", p + "self_attn.v_proj.bias", [c.KvWidth]);
            }
            if (c.OutputBias) Map(b + "attn_output.bias", p + "self_attn.o_proj.bias", [H]);
            if (c.QkNorm == QkNormKind.PerHead)
            {
                Map(b + "attn_q_norm.weight", p + "self_attn.q_norm.weight", [c.HeadDim]);
                Map(b + "attn_k_norm.weight", p + "self_attn.k_norm.weight", [c.HeadDim]);
            }
            else if (c.QkNorm == QkNormKind.FullWidth)
            {
                Map(b + "attn_q_norm.weight", p + "self_attn.q_norm.weight", [c.QWidth]);
                Map(b + "attn_k_norm.weight", p + "self_attn.k_norm.weight", [c.KvWidth]);
            }
            Map(b + "ffn_norm.weight", p + "post_attention_layernorm.weight", [H]);
            if (!c.IsSparseLayer(l))
            {
                int D = c.DenseIntermediateSize;
                Map(b + "ffn_gate.weight", p + "mlp.gate_proj.weight", [D, H]);
                Map(b + "ffn_up.weight", p + "mlp.up_proj.weight", [D, H]);
                Map(b + "ffn_down.weight", p + "mlp.down_proj.weight", [H, D]);
                continue;
            }
            string moe = llama ? p + "block_sparse_moe." : p + "mlp.";
            Map(b + "ffn_gate_inp.weight", moe + "gate.weight", [E, H]);
            string[] hfNames = llama ? ["w1", "w3", "w2"] : ["gate_proj", "up_proj", "down_proj"];
            string[] kinds = ["gate", "up", "down"];
            bool stacked = Has(b + "ffn_gate_exps.weight") || !Has(b + "ffn_gate.0.weight");
            for (int k = 0; k < 3; k++)
            {
                long[] one = k == 2 ? [H, I] : [I, H];
                if (stacked)
                {
                    var (info, file) = Check(b + $"ffn_{kinds[k]}_exps.weight", [E, .. one]);
                    long bytes = info.ByteLength / E;
                    for (int e = 0; e < E; e++)
                    {
                        string hf = $"{moe}experts.{e}.{hfNames[k]}.weight";
                        Tensors[hf] = (new TensorEntry(hf, GgmlTypes.ToDType(info.RawType)!.Value, one, info.Offset + e * bytes, bytes, file.Path), file, info, false);
                    }
                }
                else
                {
                    for (int e = 0; e < E; e++)
                        Map(b + $"ffn_{kinds[k]}.{e}.weight", $"{moe}experts.{e}.{hfNames[k]}.weight", one);
                }
            }
            if (c.SharedExpertIntermediateSize > 0)
            {
                int S = c.SharedExpertIntermediateSize;
                string sp = p + "mlp.shared_expert.";
                Map(b + "ffn_gate_inp_shexp.weight", p + "mlp.shared_expert_gate.weight", [1, H], ggufShape: [H]);
                Map(b + "ffn_gate_shexp.weight", sp + "gate_proj.weight", [S, H]);
                Map(b + "ffn_up_shexp.weight", sp + "up_proj.weight", [S, H]);
                Map(b + "ffn_down_shexp.weight", sp + "down_proj.weight", [H, S]);
            }
        }
        Map("output_norm.weight", "model.norm.weight", [H]);
        if (Has("output.weight")) Map("output.weight", "lm_head.weight", [V, H]);
    }

    private void Map(string gguf, string hf, long[] shape, bool unpermute = false, long[]? ggufShape = null)
    {
        var (info, file) = Check(gguf, ggufShape ?? shape);
        Tensors[hf] = (new TensorEntry(hf, GgmlTypes.ToDType(info.RawType)!.Value, shape, info.Offset, info.ByteLength, file.Path), unpermute ? null : file, info, unpermute);
    }

    /// <summary>The tensor, or one line naming the file, the tensor, its type and the shape the metadata implies.</summary>
    private (GgufTensorInfo Info, GgufMappedFile File) Check(string gguf, long[] torchShape)
    {
        string expected = "[" + string.Join(", ", torchShape) + "]";
        if (!_ggufTensors.TryGetValue(gguf, out var t))
            throw new CheckpointFormatException(Path, gguf, $"missing from the file (the metadata implies F32/F16/BF16 {expected})");
        var (info, file) = t;
        if (GgmlTypes.ToDType(info.RawType) is null)
            throw new CheckpointFormatException(file.Path, gguf,
                $"type {info.TypeName} is not supported (F32, F16, BF16; quantized types are not run yet); expected shape {expected}");
        if (!info.TorchShape.SequenceEqual(torchShape))
            throw new CheckpointFormatException(file.Path, gguf,
                $"{info.TypeName}[{string.Join(", ", info.TorchShape)}] disagrees with the metadata, which implies {expected}");
        return t;
    }

    /// <summary>
    /// llama.cpp's converter permutes q/k rows of arch <c>llama</c> from HF's rotate-half layout to adjacent pairs:
    /// per head, row j*half+i goes to 2i+j. This reads a GGUF q/k tensor (or bias) and writes it back in HF order.
    /// </summary>
    internal static unsafe void UnpermuteRope(byte* src, byte* dst, long rows, long rowBytes, int headDim)
    {
        int half = headDim / 2;
        for (long h = 0; h < rows / headDim; h++)
            for (int i = 0; i < half; i++)
                for (int j = 0; j < 2; j++)
                {
                    long from = h * headDim + 2 * i + j, to = h * headDim + j * half + i;
                    Buffer.MemoryCopy(src + from * rowBytes, dst + to * rowBytes, rowBytes, rowBytes);
                }
    }

    public void Dispose()
    {
        foreach (var p in _parts) p.Dispose();
        _parts.Clear();
    }
}
