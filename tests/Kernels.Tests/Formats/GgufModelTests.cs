using MoeServer.Kernels.Config;
using MoeServer.Kernels.Formats;
using MoeServer.Kernels.Formats.Gguf;
using MoeServer.Kernels.Model;
using MoeServer.Kernels.Tests.Support;

namespace MoeServer.Kernels.Tests.Formats;

/// <summary>GGUF as a model source: every family's tiny checkpoint exported and loaded back as GGUF gives the HF
/// directory's logits (prefill and decode), in both expert layouts, split into parts, and in f16/bf16.</summary>
public sealed class GgufModelTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("gguf-model-tests-").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    internal static string HfCheckpoint(ModelArchitecture family) => family == ModelArchitecture.Olmoe
        ? TinyCheckpoints.Get(family, variant: "mha", dtype: TensorDType.F32, edit: c => c with { NumKvHeads = c.NumHeads })
        : TinyCheckpoints.Get(family, dtype: TensorDType.F32);

    public static TheoryData<ModelArchitecture, string> Variants => new()
    {
        { ModelArchitecture.Mixtral, "stacked" },
        { ModelArchitecture.Mixtral, "per-expert" },
        { ModelArchitecture.Mixtral, "split" },
        { ModelArchitecture.Qwen2Moe, "stacked" },
        { ModelArchitecture.Qwen2Moe, "split" },
        { ModelArchitecture.Qwen3Moe, "stacked" },
        { ModelArchitecture.Olmoe, "stacked" },
    };

    [Theory]
    [MemberData(nameof(Variants))]
    public void A_gguf_export_loads_back_with_the_hf_directorys_logits(ModelArchitecture family, string variant)
    {
        string hf = HfCheckpoint(family);
        string path = Path.Combine(_dir, $"{family}-{variant}.gguf");
        var written = GgufExporter.Export(hf, path, new GgufExportOptions
        {
            Type = GgmlType.F32,
            PerExpert = variant == "per-expert",
            Splits = variant == "split" ? 3 : 1,
        });
        string model = written[0];
        if (variant == "split") Assert.Equal(3, written.Count);

        var want = ModelConfig.Load(hf);
        var got = ModelConfig.Load(model);
        Assert.Equal(want.MlpOnlyLayers, got.MlpOnlyLayers);
        Assert.Equal(want.EosTokenIds[0], got.EosTokenIds[0]);
        Assert.Equal(want with { TorchDtype = got.TorchDtype, EosTokenIds = got.EosTokenIds, MlpOnlyLayers = got.MlpOnlyLayers }, got);

        using var a = MoeModel.Load(hf, WeightPrecision.F32);
        using var b = MoeModel.Load(model, WeightPrecision.F32);
        int[] prompt = [5, 17, 99, 3, 250, 42, 7];
        using var sa = a.NewSequence();
        using var sb = b.NewSequence();
        var la = a.ForwardSequence(sa, prompt);
        var lb = b.ForwardSequence(sb, prompt);
        AssertClose(la, lb, "prefill");
        int next = ArgMax(la[^1]);
        for (int step = 0; step < 4; step++)
        {
            var da = a.ForwardSequence(sa, [next]);
            var db = b.ForwardSequence(sb, [next]);
            AssertClose(da, db, $"decode {step}");
            next = ArgMax(da[0]);
        }
    }

    [Theory]
    [InlineData(GgmlType.F16)]
    [InlineData(GgmlType.BF16)]
    public void Half_precision_files_load_and_agree_with_the_rounded_weights(GgmlType type)
    {
        string hf = HfCheckpoint(ModelArchitecture.Qwen3Moe);
        string path = Path.Combine(_dir, $"q3-{type}.gguf");
        GgufExporter.Export(hf, path, new GgufExportOptions { Type = type });
        using var ck = Kernels.Formats.Checkpoint.Open(path);
        Assert.Equal(type == GgmlType.F16 ? TensorDType.F16 : TensorDType.BF16, ck.Entry("model.layers.0.self_attn.v_proj.weight").DType);
        Assert.Equal(TensorDType.F32, ck.Entry("model.layers.0.input_layernorm.weight").DType);
        using var a = MoeModel.Load(hf, WeightPrecision.F32);
        using var b = MoeModel.Load(path, WeightPrecision.F32);
        using var sa = a.NewSequence();
        using var sb = b.NewSequence();
        var la = a.ForwardSequence(sa, [1, 2, 3, 4]);
        var lb = b.ForwardSequence(sb, [1, 2, 3, 4]);
        // Rounded weights: close, not equal (bf16 keeps 8 bits of mantissa).
        for (int t = 0; t < la.Length; t++)
            Assert.True(RelativeError(lb[t], la[t]) < (type == GgmlType.F16 ? 5e-3 : 5e-2), $"row {t}: {RelativeError(lb[t], la[t]):E2}");
    }

    [Fact]
    public void Stacked_experts_are_views_into_the_mapping_and_llama_q_k_rows_are_permuted_back()
    {
        string hf = HfCheckpoint(ModelArchitecture.Mixtral);
        string path = Path.Combine(_dir, "views.gguf");
        GgufExporter.Export(hf, path, new GgufExportOptions());
        using var h = Kernels.Formats.Checkpoint.Open(hf);
        using var g = Kernels.Formats.Checkpoint.Open(path);
        Assert.NotNull(g.Gguf);
        foreach (string name in h.TensorNames)
        {
            Assert.True(g.Contains(name), $"{name} missing from the GGUF view");
            Assert.Equal(h.Entry(name).Shape, g.Entry(name).Shape);
            Assert.True(h.GetBytes(h.Entry(name)).SequenceEqual(g.GetBytes(g.Entry(name))), $"{name} differs");
        }
        var e1 = g.Entry("model.layers.0.block_sparse_moe.experts.1.w1.weight");
        var e0 = g.Entry("model.layers.0.block_sparse_moe.experts.0.w1.weight");
        Assert.Equal(e0.Offset + e0.ByteLength, e1.Offset);
        Assert.Equal(path, e1.File);
    }

    [Fact]
    public void The_fingerprint_covers_every_part_and_changes_with_the_weights()
    {
        string hf = HfCheckpoint(ModelArchitecture.Qwen2Moe);
        string one = Path.Combine(_dir, "fp.gguf");
        GgufExporter.Export(hf, one, new GgufExportOptions());
        string fp = CheckpointFingerprint.Compute(one);
        Assert.Equal(fp, CheckpointFingerprint.Compute(one));
        Assert.NotEqual(CheckpointFingerprint.Compute(hf), fp);
        var parts = GgufExporter.Export(hf, Path.Combine(_dir, "fp.split.gguf"), new GgufExportOptions { Splits = 2 });
        string split = CheckpointFingerprint.Compute(parts[0]);
        Assert.NotEqual(fp, split);
        // One byte of the last part's tensor data flipped: a node holding it gets another fingerprint.
        var bytes = File.ReadAllBytes(parts[1]);
        bytes[^40] ^= 0x55;
        File.WriteAllBytes(parts[1], bytes);
        Assert.NotEqual(split, CheckpointFingerprint.Compute(parts[0]));
        File.Delete(parts[1]);
        var e = Assert.Throws<CheckpointFormatException>(() => CheckpointFingerprint.Compute(parts[0]));
        Assert.Contains(Path.GetFileName(parts[1]), e.Message, StringComparison.Ordinal);
    }

    private static void AssertClose(float[][] a, float[][] b, string what)
    {
        Assert.Equal(a.Length, b.Length);
        for (int t = 0; t < a.Length; t++)
        {
            double err = RelativeError(b[t], a[t]);
            Assert.True(err < 1e-5, $"{what}: row {t} relative error {err:E3}");
        }
    }

    private static double RelativeError(float[] got, float[] want)
    {
        double diff = 0, scale = 0;
        for (int i = 0; i < got.Length; i++)
        {
            diff = Math.Max(diff, Math.Abs(got[i] - want[i]));
            scale = Math.Max(scale, Math.Abs(want[i]));
        }
        return diff / scale;
    }

    private static int ArgMax(float[] x)
    {
        int best = 0;
        for (int i = 1; i < x.Length; i++) if (x[i] > x[best]) best = i;
        return best;
    }
}
