using System.Runtime.InteropServices;
using System.Text.Json;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Formats;
using MoeServer.Kernels.Formats.Gguf;
using MoeServer.Kernels.Native;
using MoeServer.Kernels.Tests.Support;

namespace MoeServer.Kernels.Tests.Formats;

/// <summary>The GGUF writer, read back, and the exporter of every layer-wise family checked tensor by tensor against the
/// HF checkpoint it came from.</summary>
public sealed class GgufTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("gguf-tests-").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    [Fact]
    public void Every_metadata_type_and_tensor_round_trips_through_the_writer_and_reader()
    {
        var file = new GgufFile();
        file.Set("general.architecture", GgufValue.Of("llama"));
        file.Set("u32", GgufValue.Of(7u));
        file.Set("i32", GgufValue.Of(-3));
        file.Set("f32", GgufValue.Of(1.5f));
        file.Set("flag", GgufValue.Of(true));
        file.Set("u64", new GgufValue(GgufValueType.UInt64, ulong.MaxValue));
        file.Set("f64", new GgufValue(GgufValueType.Float64, Math.PI));
        file.Set("words", GgufValue.Strings(["a", "ü✓", ""]));
        file.Set("ints", GgufValue.Int32s([1, -2, 3]));
        file.Set("floats", GgufValue.Float32s([0.25f, -8f]));
        var rng = new Random(1);
        byte[] Bytes(int n)
        {
            var b = new byte[n];
            rng.NextBytes(b);
            return b;
        }
        file.Tensors.Add(new GgufTensor("odd.weight", [3, 5], GgmlType.F32, Bytes(3 * 5 * 4)));
        file.Tensors.Add(new GgufTensor("bf.weight", [7, 2, 3], GgmlType.BF16, Bytes(7 * 2 * 3 * 2)));
        file.Tensors.Add(new GgufTensor("vec", [1], GgmlType.F32, Bytes(4)));
        string path = Path.Combine(_dir, "t.gguf");
        GgufWriter.Write(path, file);
        var back = GgufReader.Read(path);
        Assert.Equal(file.Metadata.Select(kv => kv.Key), back.Metadata.Select(kv => kv.Key));
        foreach (var (key, value) in file.Metadata)
        {
            var got = back.Get(key)!;
            Assert.Equal(value.Type, got.Type);
            if (value.Type == GgufValueType.Array) Assert.Equal(((System.Collections.IEnumerable)value.Value).Cast<object>(), ((System.Collections.IEnumerable)got.Value).Cast<object>());
            else Assert.Equal(value.Value, got.Value);
        }
        Assert.Equal(file.Tensors.Count, back.Tensors.Count);
        for (int i = 0; i < file.Tensors.Count; i++)
        {
            Assert.Equal(file.Tensors[i].Name, back.Tensors[i].Name);
            Assert.Equal(file.Tensors[i].Ne, back.Tensors[i].Ne);
            Assert.Equal(file.Tensors[i].Type, back.Tensors[i].Type);
            Assert.Equal(file.Tensors[i].Data, back.Tensors[i].Data);
        }
        Assert.Equal(0, new FileInfo(path).Length % GgufFile.DefaultAlignment);
    }

    [Fact]
    public void A_truncated_file_is_reported_with_its_path()
    {
        var file = new GgufFile();
        file.Set("general.architecture", GgufValue.Of("llama"));
        file.Tensors.Add(new GgufTensor("t", [64], GgmlType.F32, new byte[256]));
        string path = Path.Combine(_dir, "cut.gguf");
        GgufWriter.Write(path, file);
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..^100]);
        var e = Assert.Throws<InvalidDataException>(() => GgufReader.Read(path));
        Assert.Contains(path, e.Message, StringComparison.Ordinal);
        Assert.Contains("truncated", e.Message, StringComparison.Ordinal);
    }

    public static TheoryData<ModelArchitecture, string, bool> Families => new()
    {
        { ModelArchitecture.Mixtral, "llama", false },
        { ModelArchitecture.Mixtral, "llama", true },
        { ModelArchitecture.Qwen2Moe, "qwen2moe", false },
        { ModelArchitecture.Qwen3Moe, "qwen3moe", false },
        { ModelArchitecture.Olmoe, "olmoe", true },
    };

    [Theory]
    [MemberData(nameof(Families))]
    public void Export_writes_every_tensor_and_key_llama_cpp_needs_with_the_checkpoints_values(ModelArchitecture family, string arch, bool bf16)
    {
        // OLMoE has no grouped-query attention (nor does llama.cpp's olmoe); the tiny preset's GQA is for our own tests.
        string model = family == ModelArchitecture.Olmoe
            ? TinyCheckpoints.Get(family, variant: "mha", dtype: TensorDType.F32, edit: c => c with { NumKvHeads = c.NumHeads })
            : TinyCheckpoints.Get(family, dtype: TensorDType.F32);
        var cfg = ModelConfig.Load(model);
        string path = Path.Combine(_dir, $"{arch}.gguf");
        GgufExporter.Export(model, path, bf16 ? GgmlType.BF16 : GgmlType.F32);
        var g = GgufReader.Read(path);

        Assert.Equal(arch, g.Get("general.architecture")!.AsString());
        Assert.Equal((uint)cfg.NumLayers, g.Get($"{arch}.block_count")!.AsUInt32());
        Assert.Equal((uint)cfg.HiddenSize, g.Get($"{arch}.embedding_length")!.AsUInt32());
        Assert.Equal((uint)cfg.NumHeads, g.Get($"{arch}.attention.head_count")!.AsUInt32());
        Assert.Equal((uint)cfg.NumKvHeads, g.Get($"{arch}.attention.head_count_kv")!.AsUInt32());
        Assert.Equal((uint)cfg.NumExperts, g.Get($"{arch}.expert_count")!.AsUInt32());
        Assert.Equal((uint)cfg.NumExpertsPerToken, g.Get($"{arch}.expert_used_count")!.AsUInt32());
        Assert.Equal((float)cfg.RopeTheta, (float)g.Get($"{arch}.rope.freq_base")!.Value);
        Assert.Equal((float)cfg.RmsNormEps, (float)g.Get($"{arch}.attention.layer_norm_rms_epsilon")!.Value);

        // Tokenizer: every id's token, control types for specials, all merges.
        using var tok = JsonDocument.Parse(File.ReadAllText(Path.Combine(model, "tokenizer.json")));
        var tokens = (string[])g.Get("tokenizer.ggml.tokens")!.Value;
        Assert.Equal(cfg.VocabSize, tokens.Length);
        foreach (var v in tok.RootElement.GetProperty("model").GetProperty("vocab").EnumerateObject())
            Assert.Equal(v.Name, tokens[v.Value.GetInt32()]);
        Assert.Equal(tok.RootElement.GetProperty("model").GetProperty("merges").GetArrayLength(), ((string[])g.Get("tokenizer.ggml.merges")!.Value).Length);
        Assert.Equal("gpt2", g.Get("tokenizer.ggml.model")!.AsString());

        using var ck = Checkpoint.Open(model);
        float[] Hf(string name) => MemoryMarshal.Cast<byte, float>(ck.GetBytes(ck.Entry(name))).ToArray();
        var byName = g.Tensors.ToDictionary(t => t.Name);
        void Same(string gguf, float[] want, long[] torchShape, bool alwaysF32 = false)
        {
            Assert.True(byName.TryGetValue(gguf, out var t), $"{gguf} missing");
            Assert.Equal(torchShape.Reverse().ToArray(), t!.Ne);
            float[] got;
            if (t.Type == GgmlType.F32)
            {
                got = MemoryMarshal.Cast<byte, float>(t.Data).ToArray();
            }
            else
            {
                Assert.False(alwaysF32, $"{gguf} must be f32");
                got = new float[t.Elements];
                Bf16Convert.ToSingle(MemoryMarshal.Cast<byte, ushort>(t.Data), got);
                want = want.Select(x => Bf16Convert.ToSingle(Bf16Convert.ToBf16(x))).ToArray();
            }
            Assert.Equal(want, got);
        }

        int H = cfg.HiddenSize, E = cfg.NumExperts, I = cfg.ExpertIntermediateSize;
        Same("token_embd.weight", Hf("model.embed_tokens.weight"), [cfg.VocabSize, H]);
        Same("output_norm.weight", Hf("model.norm.weight"), [H], alwaysF32: true);
        for (int l = 0; l < cfg.NumLayers; l++)
        {
            string p = $"model.layers.{l}.", b = $"blk.{l}.";
            Same(b + "attn_norm.weight", Hf(p + "input_layernorm.weight"), [H], alwaysF32: true);
            var q = Hf(p + "self_attn.q_proj.weight");
            var k = Hf(p + "self_attn.k_proj.weight");
            if (arch == "llama")
            {
                // Head h's row i of the first half lands on row 2i, of the second half on 2i+1.
                var permuted = GgufExporter.PermuteForLlamaRope(q, cfg.NumHeads, cfg.HeadDim, H);
                int hd = cfg.HeadDim;
                Assert.Equal(q.AsSpan(0, H).ToArray(), permuted.AsSpan(0, H).ToArray());
                Assert.Equal(q.AsSpan(hd / 2 * H, H).ToArray(), permuted.AsSpan(H, H).ToArray());
                q = permuted;
                k = GgufExporter.PermuteForLlamaRope(k, cfg.NumKvHeads, cfg.HeadDim, H);
            }
            Same(b + "attn_q.weight", q, [cfg.QWidth, H]);
            Same(b + "attn_k.weight", k, [cfg.KvWidth, H]);
            Same(b + "attn_v.weight", Hf(p + "self_attn.v_proj.weight"), [cfg.KvWidth, H]);
            Same(b + "attn_output.weight", Hf(p + "self_attn.o_proj.weight"), [H, cfg.QWidth]);
            Same(b + "ffn_norm.weight", Hf(p + "post_attention_layernorm.weight"), [H], alwaysF32: true);
            if (cfg.QkvBias) Same(b + "attn_q.bias", Hf(p + "self_attn.q_proj.bias"), [cfg.QWidth], alwaysF32: true);
            if (cfg.QkNorm != QkNormKind.None) Assert.Contains(b + "attn_q_norm.weight", byName.Keys);
            if (!cfg.IsSparseLayer(l)) continue;
            string moe = ck.Contains(p + "block_sparse_moe.gate.weight") ? p + "block_sparse_moe." : p + "mlp.";
            Same(b + "ffn_gate_inp.weight", Hf(moe + "gate.weight"), [E, H], alwaysF32: true);
            bool mixtral = ck.Contains(moe + "experts.0.w1.weight");
            var gate = Enumerable.Range(0, E).SelectMany(e => Hf($"{moe}experts.{e}." + (mixtral ? "w1.weight" : "gate_proj.weight"))).ToArray();
            var down = Enumerable.Range(0, E).SelectMany(e => Hf($"{moe}experts.{e}." + (mixtral ? "w2.weight" : "down_proj.weight"))).ToArray();
            Same(b + "ffn_gate_exps.weight", gate, [E, I, H]);
            Same(b + "ffn_down_exps.weight", down, [E, H, I]);
            Assert.Contains(b + "ffn_up_exps.weight", byName.Keys);
            if (cfg.SharedExpertIntermediateSize > 0)
                Same(b + "ffn_gate_inp_shexp.weight", Hf(p + "mlp.shared_expert_gate.weight"), [H], alwaysF32: true);
        }
    }

    [Fact]
    public void An_olmoe_checkpoint_with_grouped_query_attention_is_refused_since_llama_cpp_cannot_run_it()
    {
        string model = TinyCheckpoints.Get(ModelArchitecture.Olmoe, dtype: TensorDType.F32);
        Assert.NotEqual(ModelConfig.Load(model).NumHeads, ModelConfig.Load(model).NumKvHeads);
        var e = Assert.Throws<ArgumentException>(() => GgufExporter.Build(model, GgmlType.F32));
        Assert.Contains("grouped-query attention", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_router_decoupled_model_is_refused_with_a_clear_error()
    {
        string model = TinyCheckpoints.Get(ModelArchitecture.RouterDecoupled);
        var e = Assert.Throws<ArgumentException>(() => GgufExporter.Build(model, GgmlType.F32));
        Assert.Contains("no llama.cpp architecture", e.Message, StringComparison.Ordinal);
    }
}
