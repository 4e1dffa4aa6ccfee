using MoeServer.Kernels.Checkpoints;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Formats;
using MoeServer.Kernels.Model;
using MoeServer.Kernels.Tests.Support;

namespace MoeServer.Kernels.Tests.Model;

/// <summary><see cref="ModelWeights.LoadExpert"/>: one routed expert, as an expert node loads it on demand.</summary>
public class ExpertLoadTests
{
    public static TheoryData<ModelArchitecture, bool, WeightPrecision> Cases
    {
        get
        {
            var data = new TheoryData<ModelArchitecture, bool, WeightPrecision>();
            foreach (var arch in new[] { ModelArchitecture.Mixtral, ModelArchitecture.Qwen2Moe, ModelArchitecture.Qwen3Moe, ModelArchitecture.Olmoe })
                foreach (bool fused in new[] { false, true })
                    foreach (var precision in new[] { WeightPrecision.BF16, WeightPrecision.F32 })
                        data.Add(arch, fused, precision);
            return data;
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Single_expert_load_is_bitwise_equal_to_the_full_loads_expert(ModelArchitecture arch, bool fused, WeightPrecision precision)
    {
        string dir = TinyCheckpoints.Get(arch, fused: fused);
        var cfg = ModelConfig.Load(dir);
        using var ck = Checkpoint.Open(dir);
        using var all = ModelWeights.Load(cfg, ck, precision);
        int checkedExperts = 0;
        for (int l = 0; l < cfg.NumLayers; l++)
        {
            if (!cfg.IsSparseLayer(l)) continue;
            for (int e = 0; e < cfg.NumExperts; e++)
            {
                using var one = ModelWeights.LoadExpert(cfg, ck, l, e, precision);
                TensorBytes.AssertSame(all.Layers[l].Experts[e], one, $"{arch} fused={fused} {precision} layer {l} expert {e}");
                Assert.Equal(cfg.ExpertIntermediateSize, one.IntermediateSize);
                checkedExperts++;
            }
        }
        Assert.True(checkedExperts >= cfg.NumExperts);
    }

    [Fact]
    public void Single_expert_load_works_on_a_sharded_f16_checkpoint()
    {
        string dir = TinyCheckpoints.Get(ModelArchitecture.Olmoe, dtype: TensorDType.F16, shards: 3);
        var cfg = ModelConfig.Load(dir);
        using var ck = Checkpoint.Open(dir);
        using var all = ModelWeights.Load(cfg, ck, WeightPrecision.F32);
        using var one = ModelWeights.LoadExpert(cfg, ck, 1, 3, WeightPrecision.F32);
        TensorBytes.AssertSame(all.Layers[1].Experts[3], one, "sharded f16 layer 1 expert 3");
    }

    [Theory]
    [InlineData(false, "model.layers.0.block_sparse_moe.experts.2.w3.weight")]
    [InlineData(true, "model.layers.0.mlp.experts.down_proj")]
    public void Missing_expert_tensor_fails_naming_file_and_tensor(bool fused, string missing)
    {
        string source = TinyCheckpoints.Get(ModelArchitecture.Mixtral, fused: fused);
        using var dir = new TempDir();
        var cfg = ModelConfig.Load(source);
        RewriteWithout(source, dir.Path, missing);
        using var ck = Checkpoint.Open(dir.Path);
        var e = Assert.Throws<CheckpointFormatException>(() => ModelWeights.LoadExpert(cfg, ck, 0, 2, WeightPrecision.BF16));
        Assert.Contains(missing, e.Message);
        Assert.Contains(Checkpoint.SingleFileName, e.Message);
        // Other experts of a per-expert checkpoint still load: only the asked-for tensors are read.
        if (!fused)
        {
            using var other = ModelWeights.LoadExpert(cfg, ck, 0, 1, WeightPrecision.BF16);
            Assert.Equal(cfg.ExpertIntermediateSize, other.IntermediateSize);
        }
    }

    [Fact]
    public void Expert_shape_that_disagrees_with_config_names_file_and_tensor()
    {
        using var dir = new TempDir();
        var cfg = CheckpointPresets.Config(ModelArchitecture.Qwen3Moe, CheckpointPreset.Tiny);
        CheckpointGenerator.WriteWeights(cfg, dir.Path, new GeneratorOptions());
        using var ck = Checkpoint.Open(dir.Path);
        var wider = cfg with { ExpertIntermediateSize = cfg.ExpertIntermediateSize + 4 };
        var e = Assert.Throws<CheckpointFormatException>(() => ModelWeights.LoadExpert(wider, ck, 0, 3, WeightPrecision.F32));
        Assert.Contains("model.layers.0.mlp.experts.3.gate_proj.weight", e.Message);
        Assert.Contains(Checkpoint.SingleFileName, e.Message);
    }

    [Theory]
    [InlineData(-1, 0, "layer", "out of range")]
    [InlineData(2, 0, "layer", "out of range")]
    [InlineData(1, 0, "layer", "dense MLP layer")]
    [InlineData(0, 4, "expert", "out of range")]
    [InlineData(0, -1, "expert", "out of range")]
    public void Expert_outside_the_model_is_refused_clearly(int layer, int expert, string param, string words)
    {
        // Tiny Qwen2-MoE: 2 layers, layer 1 dense (mlp_only_layers), 4 experts.
        string dir = TinyCheckpoints.Get(ModelArchitecture.Qwen2Moe);
        var cfg = ModelConfig.Load(dir);
        using var ck = Checkpoint.Open(dir);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => ModelWeights.LoadExpert(cfg, ck, layer, expert, WeightPrecision.BF16));
        Assert.Equal(param, e.ParamName);
        Assert.Contains(words, e.Message);
        Assert.Contains($"{param} {(param == "layer" ? layer : expert)}", e.Message);
    }

    /// <summary>Copies config.json and the single safetensors file, leaving one tensor out.</summary>
    private static void RewriteWithout(string sourceDir, string destDir, string tensor)
    {
        File.Copy(Path.Combine(sourceDir, "config.json"), Path.Combine(destDir, "config.json"));
        using var f = SafetensorsFile.Open(Path.Combine(sourceDir, Checkpoint.SingleFileName));
        Assert.Contains(tensor, f.Tensors.Keys);
        var kept = f.Tensors.Values.Where(t => t.Name != tensor)
            .Select(t => new TensorData(t.Name, t.DType, t.Shape, f.GetBytes(t).ToArray())).ToList();
        SafetensorsWriter.WriteFile(Path.Combine(destDir, Checkpoint.SingleFileName), kept);
    }
}
