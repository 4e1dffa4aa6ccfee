using System.Text.Json;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Native;

namespace MoeServer.Kernels.Formats.Gguf;

/// <summary>
/// Converts an HF checkpoint of a layer-wise family to a GGUF file llama.cpp loads: Mixtral as arch <c>llama</c> with
/// expert metadata (its q/k rows permuted to llama.cpp's interleaved rotary layout, as convert_hf_to_gguf does),
/// <c>qwen2moe</c>, <c>qwen3moe</c>, <c>olmoe</c>; experts stacked per layer (<c>ffn_*_exps</c>), the byte-level BPE
/// tokenizer embedded as <c>gpt2</c> with the GPT-2 pre-tokenizer. 1-D tensors (norms, biases) and router gates are
/// always f32, as llama.cpp computes them in f32. Options: f16 matrices, the per-expert tensors of older Mixtral files
/// (<c>blk.N.ffn_gate.E.weight</c>), and a SentencePiece vocabulary (<c>tokenizer.ggml.model = llama</c>) from an
/// <c>spm_train</c> model in place of the checkpoint's byte-level BPE.
/// </summary>
public static class GgufExporter
{
    public static GgufFile Build(string modelDir, GgmlType type) => Build(modelDir, new GgufExportOptions { Type = type });

    public static GgufFile Build(string modelDir, GgufExportOptions options)
    {
        var type = options.Type;
        if (type is not (GgmlType.F32 or GgmlType.BF16 or GgmlType.F16)) throw new ArgumentException($"export type {type}: f32, f16 or bf16", nameof(options));
        var cfg = ModelConfig.Load(modelDir);
        string arch = cfg.Architecture switch
        {
            ModelArchitecture.Mixtral => "llama",
            ModelArchitecture.Qwen2Moe => "qwen2moe",
            ModelArchitecture.Qwen3Moe => "qwen3moe",
            ModelArchitecture.Olmoe => "olmoe",
            _ => throw new ArgumentException($"{modelDir}: {ModelArchitectureNames.ToModelType(cfg.Architecture)} has no llama.cpp architecture (a router-decoupled model routes outside its layers)"),
        };
        if (arch == "olmoe" && cfg.NumKvHeads != cfg.NumHeads)
            throw new ArgumentException($"{modelDir}: llama.cpp's olmoe has no grouped-query attention (its k norm spans the full hidden width), " +
                $"but this checkpoint has {cfg.NumKvHeads} key/value heads for {cfg.NumHeads} query heads");
        using var ck = Checkpoint.Open(modelDir);
        var file = new GgufFile();
        var src = new Source(ck, modelDir);
        if (options.PerExpert && arch != "llama")
            throw new ArgumentException($"{modelDir}: per-expert tensors (--per-expert) are the layout of older Mixtral (llama) files only");
        AddMetadata(file, cfg, arch, modelDir, type);
        if (options.SpmVocab is { } spm) AddSpmTokenizer(file, cfg, modelDir, spm);
        else AddTokenizer(file, cfg, modelDir);

        byte[] Matrix(float[] values) => Encode(values, type);
        void Add(string name, long[] torchShape, byte[] data, GgmlType t) =>
            file.Tensors.Add(new GgufTensor(name, torchShape.Reverse().ToArray(), t, data));
        void AddF32(string name, long[] torchShape, float[] values) => Add(name, torchShape, Encode(values, GgmlType.F32), GgmlType.F32);

        int H = cfg.HiddenSize, V = cfg.VocabSize, E = cfg.NumExperts, I = cfg.ExpertIntermediateSize;
        Add("token_embd.weight", [V, H], Matrix(src.Floats("model.embed_tokens.weight")), type);
        for (int l = 0; l < cfg.NumLayers; l++)
        {
            string p = $"model.layers.{l}.", b = $"blk.{l}.";
            AddF32(b + "attn_norm.weight", [H], src.Floats(p + "input_layernorm.weight"));
            var q = src.Floats(p + "self_attn.q_proj.weight");
            var k = src.Floats(p + "self_attn.k_proj.weight");
            if (arch == "llama")
            {
                q = PermuteForLlamaRope(q, cfg.NumHeads, cfg.HeadDim, H);
                k = PermuteForLlamaRope(k, cfg.NumKvHeads, cfg.HeadDim, H);
            }
            Add(b + "attn_q.weight", [cfg.QWidth, H], Matrix(q), type);
            Add(b + "attn_k.weight", [cfg.KvWidth, H], Matrix(k), type);
            Add(b + "attn_v.weight", [cfg.KvWidth, H], Matrix(src.Floats(p + "self_attn.v_proj.weight")), type);
            Add(b + "attn_output.weight", [H, cfg.QWidth], Matrix(src.Floats(p + "self_attn.o_proj.weight")), type);
            if (cfg.QkvBias)
            {
                var qb = src.Floats(p + "self_attn.q_proj.bias");
                var kb = src.Floats(p + "self_attn.k_proj.bias");
                if (arch == "llama")
                {
                    qb = PermuteForLlamaRope(qb, cfg.NumHeads, cfg.HeadDim, 1);
                    kb = PermuteForLlamaRope(kb, cfg.NumKvHeads, cfg.HeadDim, 1);
                }
                AddF32(b + "attn_q.bias", [cfg.QWidth], qb);
                AddF32(b + "attn_k.bias", [cfg.KvWidth], kb);
                AddF32(b + "attn_v.bias", [cfg.KvWidth], src.Floats(p + "self_attn.v_proj.bias"));
            }
            if (cfg.OutputBias) AddF32(b + "attn_output.bias", [H], src.Floats(p + "self_attn.o_proj.bias"));
            if (cfg.QkNorm == QkNormKind.PerHead)
            {
                AddF32(b + "attn_q_norm.weight", [cfg.HeadDim], src.Floats(p + "self_attn.q_norm.weight"));
                AddF32(b + "attn_k_norm.weight", [cfg.HeadDim], src.Floats(p + "self_attn.k_norm.weight"));
            }
            else if (cfg.QkNorm == QkNormKind.FullWidth)
            {
                AddF32(b + "attn_q_norm.weight", [cfg.QWidth], src.Floats(p + "self_attn.q_norm.weight"));
                AddF32(b + "attn_k_norm.weight", [cfg.KvWidth], src.Floats(p + "self_attn.k_norm.weight"));
            }
            AddF32(b + "ffn_norm.weight", [H], src.Floats(p + "post_attention_layernorm.weight"));
            if (!cfg.IsSparseLayer(l))
            {
                int D = cfg.DenseIntermediateSize;
                Add(b + "ffn_gate.weight", [D, H], Matrix(src.Floats(p + "mlp.gate_proj.weight")), type);
                Add(b + "ffn_up.weight", [D, H], Matrix(src.Floats(p + "mlp.up_proj.weight")), type);
                Add(b + "ffn_down.weight", [H, D], Matrix(src.Floats(p + "mlp.down_proj.weight")), type);
                continue;
            }
            string moe = arch == "llama" && ck.Contains(p + "block_sparse_moe.gate.weight") ? p + "block_sparse_moe." : p + "mlp.";
            AddF32(b + "ffn_gate_inp.weight", [E, H], src.Floats(moe + "gate.weight"));
            var (gate, up, down) = src.StackedExperts(moe, cfg);
            if (options.PerExpert)
            {
                long ih = (long)I * H;
                for (int e = 0; e < E; e++)
                {
                    Add(b + $"ffn_gate.{e}.weight", [I, H], Matrix(gate.AsSpan((int)(e * ih), (int)ih).ToArray()), type);
                    Add(b + $"ffn_down.{e}.weight", [H, I], Matrix(down.AsSpan((int)(e * ih), (int)ih).ToArray()), type);
                    Add(b + $"ffn_up.{e}.weight", [I, H], Matrix(up.AsSpan((int)(e * ih), (int)ih).ToArray()), type);
                }
            }
            else
            {
                Add(b + "ffn_gate_exps.weight", [E, I, H], Matrix(gate), type);
                Add(b + "ffn_up_exps.weight", [E, I, H], Matrix(up), type);
                Add(b + "ffn_down_exps.weight", [E, H, I], Matrix(down), type);
            }
            if (cfg.SharedExpertIntermediateSize > 0)
            {
                int S = cfg.SharedExpertIntermediateSize;
                string sp = p + "mlp.shared_expert.";
                AddF32(b + "ffn_gate_inp_shexp.weight", [H], src.Floats(p + "mlp.shared_expert_gate.weight"));
                Add(b + "ffn_gate_shexp.weight", [S, H], Matrix(src.Floats(sp + "gate_proj.weight")), type);
                Add(b + "ffn_up_shexp.weight", [S, H], Matrix(src.Floats(sp + "up_proj.weight")), type);
                Add(b + "ffn_down_shexp.weight", [H, S], Matrix(src.Floats(sp + "down_proj.weight")), type);
            }
        }
        AddF32("output_norm.weight", [H], src.Floats("model.norm.weight"));
        if (!cfg.TieWordEmbeddings && ck.Contains("lm_head.weight"))
            Add("output.weight", [V, H], Matrix(src.Floats("lm_head.weight")), type);
        return file;
    }

    public static void Export(string modelDir, string outPath, GgmlType type) => GgufWriter.Write(outPath, Build(modelDir, type));

    /// <summary>Writes the export; with <see cref="GgufExportOptions.Splits"/> above 1, as llama.cpp's split files
    /// (<c>NAME-00001-of-0000N.gguf</c>, ...); returns the paths written.</summary>
    public static IReadOnlyList<string> Export(string modelDir, string outPath, GgufExportOptions options)
    {
        var file = Build(modelDir, options);
        if (options.Splits <= 1)
        {
            GgufWriter.Write(outPath, file);
            return [outPath];
        }
        return GgufWriter.WriteSplit(outPath, file, options.Splits);
    }

    /// <summary>
    /// HF llama-family q/k rows rotate halves (rotate_half); llama.cpp's <c>llama</c> arch rotates adjacent pairs. Per
    /// head, row r of the first half goes to 2r and of the second half to 2r+1 (convert_hf_to_gguf's permute).
    /// </summary>
    public static float[] PermuteForLlamaRope(float[] w, int heads, int headDim, int cols)
    {
        var result = new float[w.Length];
        int half = headDim / 2;
        for (int h = 0; h < heads; h++)
        {
            for (int i = 0; i < half; i++)
            {
                for (int j = 0; j < 2; j++)
                {
                    int from = h * headDim + j * half + i, to = h * headDim + 2 * i + j;
                    Array.Copy(w, (long)from * cols, result, (long)to * cols, cols);
                }
            }
        }
        return result;
    }

    private static void AddMetadata(GgufFile f, ModelConfig cfg, string arch, string modelDir, GgmlType type)
    {
        f.Set("general.architecture", GgufValue.Of(arch));
        f.Set("general.name", GgufValue.Of(Path.GetFileName(Path.GetFullPath(modelDir).TrimEnd('/'))));
        f.Set("general.alignment", GgufValue.Of((uint)GgufFile.DefaultAlignment));
        f.Set("general.file_type", GgufValue.Of(type switch { GgmlType.F32 => 0u, GgmlType.F16 => 1u, _ => 32u })); // LLAMA_FTYPE_ALL_F32 / MOSTLY_F16 / MOSTLY_BF16
        f.Set($"{arch}.vocab_size", GgufValue.Of((uint)cfg.VocabSize));
        f.Set($"{arch}.context_length", GgufValue.Of((uint)cfg.MaxPositionEmbeddings));
        f.Set($"{arch}.embedding_length", GgufValue.Of((uint)cfg.HiddenSize));
        f.Set($"{arch}.block_count", GgufValue.Of((uint)cfg.NumLayers));
        f.Set($"{arch}.feed_forward_length", GgufValue.Of((uint)(arch == "llama" ? cfg.ExpertIntermediateSize : cfg.DenseIntermediateSize)));
        f.Set($"{arch}.attention.head_count", GgufValue.Of((uint)cfg.NumHeads));
        f.Set($"{arch}.attention.head_count_kv", GgufValue.Of((uint)cfg.NumKvHeads));
        f.Set($"{arch}.attention.key_length", GgufValue.Of((uint)cfg.HeadDim));
        f.Set($"{arch}.attention.value_length", GgufValue.Of((uint)cfg.HeadDim));
        f.Set($"{arch}.rope.dimension_count", GgufValue.Of((uint)cfg.HeadDim));
        f.Set($"{arch}.rope.freq_base", GgufValue.Of((float)cfg.RopeTheta));
        f.Set($"{arch}.attention.layer_norm_rms_epsilon", GgufValue.Of((float)cfg.RmsNormEps));
        f.Set($"{arch}.expert_count", GgufValue.Of((uint)cfg.NumExperts));
        f.Set($"{arch}.expert_used_count", GgufValue.Of((uint)cfg.NumExpertsPerToken));
        if (arch != "llama") f.Set($"{arch}.expert_feed_forward_length", GgufValue.Of((uint)cfg.ExpertIntermediateSize));
        if (cfg.SharedExpertIntermediateSize > 0)
            f.Set($"{arch}.expert_shared_feed_forward_length", GgufValue.Of((uint)cfg.SharedExpertIntermediateSize));
        if (arch is "qwen3moe" or "llama") f.Set($"{arch}.expert_weights_norm", GgufValue.Of(cfg.NormTopKProb));
        if (cfg.ClipQkv is { } clip) f.Set($"{arch}.attention.clamp_kqv", GgufValue.Of((float)clip));
    }

    /// <summary>The tokenizer.json BPE as llama.cpp's gpt2 tokenizer: tokens by id, control types for special tokens,
    /// merges, special ids, and the chat template when tokenizer_config.json has one.</summary>
    private static void AddTokenizer(GgufFile f, ModelConfig cfg, string modelDir)
    {
        string path = Path.Combine(modelDir, "tokenizer.json");
        using var doc = JsonDocument.Parse(File.ReadAllText(path));
        var model = doc.RootElement.GetProperty("model");
        if (model.GetProperty("type").GetString() != "BPE") throw new InvalidDataException($"{path}: only BPE tokenizers are exported");
        var tokens = new string[cfg.VocabSize];
        var types = Enumerable.Repeat(1, cfg.VocabSize).ToArray(); // normal
        foreach (var v in model.GetProperty("vocab").EnumerateObject())
        {
            int id = v.Value.GetInt32();
            if (id < tokens.Length) tokens[id] = v.Name;
        }
        foreach (var added in doc.RootElement.TryGetProperty("added_tokens", out var at) ? at.EnumerateArray() : default)
        {
            int id = added.GetProperty("id").GetInt32();
            if (id >= tokens.Length) continue;
            tokens[id] = added.GetProperty("content").GetString()!;
            if (added.TryGetProperty("special", out var sp) && sp.GetBoolean()) types[id] = 3; // control
        }
        for (int i = 0; i < tokens.Length; i++)
        {
            if (tokens[i] is not null) continue;
            tokens[i] = $"[PAD{i}]"; // ids the tokenizer never produces (the embedding table is larger)
            types[i] = 5; // unused
        }
        var merges = model.TryGetProperty("merges", out var m)
            ? m.EnumerateArray().Select(x => x.ValueKind == JsonValueKind.Array ? $"{x[0].GetString()} {x[1].GetString()}" : x.GetString()!).ToArray()
            : [];
        f.Set("tokenizer.ggml.model", GgufValue.Of("gpt2"));
        f.Set("tokenizer.ggml.pre", GgufValue.Of("gpt-2"));
        f.Set("tokenizer.ggml.tokens", GgufValue.Strings(tokens));
        f.Set("tokenizer.ggml.token_type", GgufValue.Int32s(types));
        f.Set("tokenizer.ggml.merges", GgufValue.Strings(merges));
        if (cfg.EosTokenIds.Count > 0) f.Set("tokenizer.ggml.eos_token_id", GgufValue.Of((uint)cfg.EosTokenIds[0]));
        if (cfg.BosTokenId is { } bos) f.Set("tokenizer.ggml.bos_token_id", GgufValue.Of((uint)bos));
        f.Set("tokenizer.ggml.add_bos_token", GgufValue.Of(false));
        string tc = Path.Combine(modelDir, "tokenizer_config.json");
        if (File.Exists(tc))
        {
            using var cdoc = JsonDocument.Parse(File.ReadAllText(tc));
            if (cdoc.RootElement.TryGetProperty("chat_template", out var t) && t.ValueKind == JsonValueKind.String)
                f.Set("tokenizer.chat_template", GgufValue.Of(t.GetString()!));
        }
    }

    /// <summary>
    /// A SentencePiece vocabulary as llama.cpp's <c>llama</c> tokenizer: the pieces, scores and types of an
    /// <c>spm_train</c> <c>.vocab</c> file (piece TAB score per line; <c>&lt;unk&gt;</c> unknown, <c>&lt;s&gt;</c>/<c>&lt;/s&gt;</c>
    /// control, <c>&lt;0xNN&gt;</c> byte pieces), padded with unused tokens to the model's vocabulary size.
    /// </summary>
    private static void AddSpmTokenizer(GgufFile f, ModelConfig cfg, string modelDir, string vocabPath)
    {
        var lines = File.ReadAllLines(vocabPath).Where(l => l.Length > 0).ToArray();
        if (lines.Length > cfg.VocabSize)
            throw new ArgumentException($"{vocabPath}: {lines.Length} pieces, but {modelDir} has a vocabulary of {cfg.VocabSize}");
        var tokens = new string[cfg.VocabSize];
        var scores = new float[cfg.VocabSize];
        var types = new int[cfg.VocabSize];
        int? unk = null, bos = null, eos = null;
        for (int i = 0; i < lines.Length; i++)
        {
            var parts = lines[i].Split('\t');
            if (parts.Length != 2 || !float.TryParse(parts[1], System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out float score))
                throw new ArgumentException($"{vocabPath}: line {i + 1} is not 'piece<TAB>score'");
            tokens[i] = parts[0];
            scores[i] = score;
            types[i] = parts[0] switch
            {
                "<unk>" => 2,
                "<s>" or "</s>" => 3,
                _ when parts[0].Length == 6 && parts[0].StartsWith("<0x", StringComparison.Ordinal) && parts[0].EndsWith('>') => 6,
                _ => 1,
            };
            if (parts[0] == "<unk>") unk = i;
            if (parts[0] == "<s>") bos = i;
            if (parts[0] == "</s>") eos = i;
        }
        for (int i = lines.Length; i < tokens.Length; i++)
        {
            tokens[i] = $"[PAD{i}]";
            scores[i] = -1e9f;
            types[i] = 5; // unused
        }
        f.Set("tokenizer.ggml.model", GgufValue.Of("llama"));
        f.Set("tokenizer.ggml.pre", GgufValue.Of("default"));
        f.Set("tokenizer.ggml.tokens", GgufValue.Strings(tokens));
        f.Set("tokenizer.ggml.scores", GgufValue.Float32s(scores));
        f.Set("tokenizer.ggml.token_type", GgufValue.Int32s(types));
        if (unk is { } u) f.Set("tokenizer.ggml.unknown_token_id", GgufValue.Of((uint)u));
        if (bos is { } b) f.Set("tokenizer.ggml.bos_token_id", GgufValue.Of((uint)b));
        if (eos is { } e) f.Set("tokenizer.ggml.eos_token_id", GgufValue.Of((uint)e));
        f.Set("tokenizer.ggml.add_bos_token", GgufValue.Of(true));
        f.Set("tokenizer.ggml.add_eos_token", GgufValue.Of(false));
        f.Set("tokenizer.ggml.add_space_prefix", GgufValue.Of(true));
    }

    private static byte[] Encode(float[] values, GgmlType type)
    {
        if (type == GgmlType.F32)
        {
            var bytes = new byte[values.Length * 4];
            Buffer.BlockCopy(values, 0, bytes, 0, bytes.Length);
            return bytes;
        }
        if (type == GgmlType.F16)
        {
            var h = new byte[values.Length * 2];
            var hs = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, Half>(h.AsSpan());
            for (int i = 0; i < values.Length; i++) hs[i] = (Half)values[i];
            return h;
        }
        var bf = new ushort[values.Length];
        Bf16Convert.ToBf16(values, bf);
        var result = new byte[bf.Length * 2];
        Buffer.BlockCopy(bf, 0, result, 0, result.Length);
        return result;
    }

    /// <summary>Reads checkpoint tensors as f32 (from f32, bf16 or f16), naming the file and tensor when one is missing.</summary>
    private sealed class Source(Checkpoint ck, string modelDir)
    {
        public float[] Floats(string name)
        {
            if (!ck.Contains(name)) throw new CheckpointFormatException(Path.Combine(modelDir, "model.safetensors"), name, "missing from the checkpoint (needed for GGUF export)");
            var e = ck.Entry(name);
            var bytes = ck.GetBytes(e);
            long n = e.Shape.Aggregate(1L, (a, b) => a * b);
            var result = new float[n];
            switch (e.DType)
            {
                case TensorDType.F32:
                    System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(bytes).CopyTo(result);
                    break;
                case TensorDType.BF16:
                    Bf16Convert.ToSingle(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(bytes), result);
                    break;
                case TensorDType.F16:
                    var halves = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, Half>(bytes);
                    for (long i = 0; i < n; i++) result[i] = (float)halves[(int)i];
                    break;
            }
            return result;
        }

        /// <summary>Every expert's gate, up and down matrices stacked [E, I, H], [E, I, H], [E, H, I], from per-expert
        /// tensors (Mixtral w1/w3/w2 or gate/up/down_proj) or the fused v5 layout.</summary>
        public (float[] Gate, float[] Up, float[] Down) StackedExperts(string moe, ModelConfig cfg)
        {
            int E = cfg.NumExperts, I = cfg.ExpertIntermediateSize, H = cfg.HiddenSize;
            long ih = (long)I * H;
            var gate = new float[E * ih];
            var up = new float[E * ih];
            var down = new float[E * ih];
            if (ck.Contains(moe + "experts.gate_up_proj"))
            {
                var gu = Floats(moe + "experts.gate_up_proj"); // [E, 2I, H]: gate rows then up rows
                var d = Floats(moe + "experts.down_proj");
                for (int e = 0; e < E; e++)
                {
                    Array.Copy(gu, e * 2 * ih, gate, e * ih, ih);
                    Array.Copy(gu, e * 2 * ih + ih, up, e * ih, ih);
                }
                Array.Copy(d, down, down.Length);
                return (gate, up, down);
            }
            bool mixtral = ck.Contains(moe + "experts.0.w1.weight");
            for (int e = 0; e < E; e++)
            {
                string ep = $"{moe}experts.{e}.";
                Array.Copy(Floats(ep + (mixtral ? "w1.weight" : "gate_proj.weight")), 0, gate, e * ih, ih);
                Array.Copy(Floats(ep + (mixtral ? "w3.weight" : "up_proj.weight")), 0, up, e * ih, ih);
                Array.Copy(Floats(ep + (mixtral ? "w2.weight" : "down_proj.weight")), 0, down, e * ih, ih);
            }
            return (gate, up, down);
        }
    }
}

/// <summary>What <see cref="GgufExporter"/> writes.</summary>
public sealed record GgufExportOptions
{
    /// <summary>Matrix type: F32, F16 or BF16 (norms, biases and routers are always F32).</summary>
    public GgmlType Type { get; init; } = GgmlType.F32;
    /// <summary>Per-expert tensors (<c>blk.N.ffn_gate.E.weight</c>, older Mixtral files) instead of stacked ones.</summary>
    public bool PerExpert { get; init; }
    /// <summary>Parts to split the file into (llama.cpp's gguf-split layout); 1 = one file.</summary>
    public int Splits { get; init; } = 1;
    /// <summary>An spm_train <c>.vocab</c> file: embed a SentencePiece tokenizer instead of the checkpoint's BPE.</summary>
    public string? SpmVocab { get; init; }
}
