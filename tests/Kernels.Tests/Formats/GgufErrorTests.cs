using MoeServer.Kernels.Config;
using MoeServer.Kernels.Formats;
using MoeServer.Kernels.Formats.Gguf;
using MoeServer.Kernels.Model;

namespace MoeServer.Kernels.Tests.Formats;

/// <summary>Broken or unsupported GGUF files fail at open with one line naming the file, the tensor, its type and the
/// shape the metadata implies; never a crash, a hang or garbage.</summary>
public sealed class GgufErrorTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("gguf-error-tests-").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    private GgufFile Build() => GgufExporter.Build(GgufModelTests.HfCheckpoint(ModelArchitecture.Qwen2Moe), GgmlType.F32);

    private string Write(GgufFile f, string name)
    {
        string path = Path.Combine(_dir, name);
        GgufWriter.Write(path, f);
        return path;
    }

    private static Exception Open(string path)
    {
        var e = Record.Exception(() =>
        {
            using var ck = Checkpoint.Open(path);
        });
        Assert.NotNull(e);
        Assert.True(e is CheckpointFormatException or ModelConfigException, $"{e.GetType().Name}: {e.Message}");
        Assert.DoesNotContain('\n', e.Message);
        Assert.Contains(path, e.Message, StringComparison.Ordinal);
        // ModelConfig.Load (every tool and node starts there) fails the same way.
        var e2 = Record.Exception(() => ModelConfig.Load(path));
        Assert.Equal(e.Message, e2?.Message);
        return e;
    }

    [Theory]
    [InlineData(100)]
    [InlineData(5000)]
    [InlineData(200_000)]
    public void A_truncated_file_names_the_file_and_says_truncated(int cutBytes)
    {
        string path = Write(Build(), "cut.gguf");
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..Math.Max(30, bytes.Length - cutBytes)]);
        var e = Open(path);
        Assert.Contains("truncated", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_file_cut_inside_its_header_is_reported_not_read_past_its_end()
    {
        string path = Write(Build(), "head.gguf");
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..4000]);
        var e = Open(path);
        Assert.Contains("header", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void An_unknown_architecture_is_named()
    {
        var f = Build();
        f.Set("general.architecture", GgufValue.Of("mamba"));
        var e = Open(Write(f, "arch.gguf"));
        Assert.Contains("unknown architecture 'mamba'", e.Message, StringComparison.Ordinal);
        Assert.Contains("qwen2moe", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_llama_file_without_experts_is_refused()
    {
        var f = GgufExporter.Build(GgufModelTests.HfCheckpoint(ModelArchitecture.Mixtral), GgmlType.F32);
        f.Set("llama.expert_count", GgufValue.Of(0u));
        var e = Open(Write(f, "dense.gguf"));
        Assert.Contains("without experts", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_quantized_tensor_names_its_type_and_the_expected_shape()
    {
        var f = Build();
        int i = f.Tensors.FindIndex(t => t.Name == "blk.0.attn_v.weight");
        var t = f.Tensors[i];
        // Q8_0: blocks of 32 elements in 34 bytes.
        f.Tensors[i] = new GgufTensor(t.Name, t.Ne, (GgmlType)8, new byte[t.Elements / 32 * 34]);
        var e = Open(Write(f, "q8.gguf"));
        Assert.Contains("'blk.0.attn_v.weight'", e.Message, StringComparison.Ordinal);
        Assert.Contains("Q8_0", e.Message, StringComparison.Ordinal);
        Assert.Contains("[32, 64]", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_missing_tensor_is_named_with_the_shape_it_should_have()
    {
        var f = Build();
        f.Tensors.RemoveAll(t => t.Name == "blk.1.attn_k.weight");
        var e = Open(Write(f, "missing.gguf"));
        Assert.Contains("'blk.1.attn_k.weight'", e.Message, StringComparison.Ordinal);
        Assert.Contains("missing", e.Message, StringComparison.Ordinal);
        Assert.Contains("[32, 64]", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_shape_that_disagrees_with_the_metadata_is_named()
    {
        var f = Build();
        f.Set("qwen2moe.expert_feed_forward_length", GgufValue.Of(80u));
        var e = Open(Write(f, "shape.gguf"));
        Assert.Contains("'blk.0.ffn_gate_exps.weight'", e.Message, StringComparison.Ordinal);
        Assert.Contains("F32[4, 96, 64]", e.Message, StringComparison.Ordinal);
        Assert.Contains("implies [4, 80, 64]", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Not_a_gguf_file_and_a_missing_split_part_are_clear()
    {
        string junk = Path.Combine(_dir, "junk.gguf");
        File.WriteAllBytes(junk, new byte[64]);
        Assert.Contains("bad magic", Open(junk).Message, StringComparison.Ordinal);
        var parts = GgufExporter.Export(GgufModelTests.HfCheckpoint(ModelArchitecture.Qwen2Moe), Path.Combine(_dir, "s.gguf"), new GgufExportOptions { Splits = 3 });
        File.Delete(parts[2]);
        var e = Record.Exception(() => ModelConfig.Load(parts[0]));
        Assert.IsType<CheckpointFormatException>(e);
        Assert.Contains("part 3 of 3", e!.Message, StringComparison.Ordinal);
        Assert.Contains(Path.GetFileName(parts[2]), e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Tied_embeddings_use_token_embd_when_there_is_no_output_tensor()
    {
        string hf = GgufModelTests.HfCheckpoint(ModelArchitecture.Qwen3Moe);
        var f = GgufExporter.Build(hf, GgmlType.F32);
        f.Tensors.RemoveAll(t => t.Name == "output.weight");
        string path = Write(f, "tied.gguf");
        Assert.True(ModelConfig.Load(path).TieWordEmbeddings);
        using var m = MoeModel.Load(path, WeightPrecision.F32);
        Assert.True(m.Weights.TiedLmHead);
        using var s = m.NewSequence();
        var logits = m.ForwardSequence(s, [1, 2, 3]);
        Assert.All(logits[^1], x => Assert.True(float.IsFinite(x)));
    }
}
