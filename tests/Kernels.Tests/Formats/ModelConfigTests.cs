using MoeServer.Kernels.Checkpoints;
using MoeServer.Kernels.Config;

namespace MoeServer.Kernels.Tests.Formats;

public class ModelConfigTests
{
    [Theory]
    [InlineData(ModelArchitecture.Mixtral)]
    [InlineData(ModelArchitecture.Qwen2Moe)]
    [InlineData(ModelArchitecture.Qwen3Moe)]
    [InlineData(ModelArchitecture.Olmoe)]
    public void Written_config_parses_back_to_the_same_math(ModelArchitecture arch)
    {
        var cfg = CheckpointPresets.Config(arch, CheckpointPreset.Tiny);
        var back = ModelConfig.Parse(cfg.ToJson());
        Assert.Equal(cfg.Architecture, back.Architecture);
        Assert.Equal(cfg.HiddenSize, back.HiddenSize);
        Assert.Equal(cfg.HeadDim, back.HeadDim);
        Assert.Equal(cfg.NumKvHeads, back.NumKvHeads);
        Assert.Equal(cfg.ExpertIntermediateSize, back.ExpertIntermediateSize);
        Assert.Equal(cfg.DenseIntermediateSize, back.DenseIntermediateSize);
        Assert.Equal(cfg.SharedExpertIntermediateSize, back.SharedExpertIntermediateSize);
        Assert.Equal(cfg.NormTopKProb, back.NormTopKProb);
        Assert.Equal(cfg.QkvBias, back.QkvBias);
        Assert.Equal(cfg.OutputBias, back.OutputBias);
        Assert.Equal(cfg.QkNorm, back.QkNorm);
        Assert.Equal(cfg.ClipQkv, back.ClipQkv);
        Assert.Equal(cfg.MlpOnlyLayers, back.MlpOnlyLayers);
        Assert.Equal(cfg.EosTokenIds, back.EosTokenIds);
        Assert.Equal(cfg.RopeTheta, back.RopeTheta);
    }

    [Fact]
    public void Real_qwen3_moe_config_fields_are_read()
    {
        // Field set of Qwen3-30B-A3B's config.json (transformers v5 puts rope_theta inside rope_parameters).
        const string json = """
            {"architectures":["Qwen3MoeForCausalLM"],"attention_bias":false,"bos_token_id":151643,"decoder_sparse_step":1,
             "eos_token_id":151645,"head_dim":128,"hidden_act":"silu","hidden_size":2048,"intermediate_size":6144,
             "max_position_embeddings":40960,"mlp_only_layers":[],"model_type":"qwen3_moe","moe_intermediate_size":768,
             "norm_topk_prob":true,"num_attention_heads":32,"num_experts":128,"num_experts_per_tok":8,
             "num_hidden_layers":48,"num_key_value_heads":4,"rms_norm_eps":1e-06,
             "rope_parameters":{"rope_theta":1000000.0,"rope_type":"default"},"tie_word_embeddings":false,"vocab_size":151936}
            """;
        var c = ModelConfig.Parse(json);
        Assert.Equal(ModelArchitecture.Qwen3Moe, c.Architecture);
        Assert.Equal(128, c.HeadDim);
        Assert.Equal(1_000_000.0, c.RopeTheta);
        Assert.Equal(768, c.ExpertIntermediateSize);
        Assert.Equal(6144, c.DenseIntermediateSize);
        Assert.Equal(QkNormKind.PerHead, c.QkNorm);
        Assert.True(c.NormTopKProb);
        Assert.Equal([151645], c.EosTokenIds);
        Assert.Equal(4096, c.QWidth);
    }

    [Fact]
    public void Mixtral_config_without_head_dim_derives_it_and_always_renormalises()
    {
        const string json = """
            {"model_type":"mixtral","hidden_size":4096,"num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":8,
             "intermediate_size":14336,"num_local_experts":8,"num_experts_per_tok":2,"vocab_size":32000,"rms_norm_eps":1e-5,
             "rope_theta":1e6,"sliding_window":null,"bos_token_id":1,"eos_token_id":2}
            """;
        var c = ModelConfig.Parse(json);
        Assert.Equal(128, c.HeadDim);
        Assert.True(c.NormTopKProb);
        Assert.Null(c.SlidingWindow);
        Assert.Equal(8, c.NumExperts);
    }

    [Fact]
    public void Unknown_model_type_is_a_clear_error()
    {
        var e = Assert.Throws<ModelConfigException>(() => ModelConfig.Parse("""{"model_type":"deepseek_v3","hidden_size":8}""", "x/config.json"));
        Assert.Contains("x/config.json", e.Message);
        Assert.Contains("deepseek_v3", e.Message);
    }

    [Theory]
    [InlineData("hidden_size")]
    [InlineData("num_experts")]
    [InlineData("moe_intermediate_size")]
    [InlineData("vocab_size")]
    public void Missing_required_field_is_named(string field)
    {
        var cfg = CheckpointPresets.Config(ModelArchitecture.Qwen2Moe, CheckpointPreset.Tiny);
        var node = System.Text.Json.Nodes.JsonNode.Parse(cfg.ToJson())!.AsObject();
        node.Remove(field);
        var e = Assert.Throws<ModelConfigException>(() => ModelConfig.Parse(node.ToJsonString(), "m/config.json"));
        Assert.Contains($"'{field}'", e.Message);
        Assert.Contains("m/config.json", e.Message);
    }

    [Fact]
    public void Wrong_type_names_field()
    {
        var e = Assert.Throws<ModelConfigException>(() => ModelConfig.Parse(
            """{"model_type":"olmoe","hidden_size":"big","num_hidden_layers":1,"num_attention_heads":1,"num_experts":2,"num_experts_per_tok":1,"intermediate_size":4,"vocab_size":4}"""));
        Assert.Contains("hidden_size", e.Message);
    }

    [Fact]
    public void Missing_config_file_names_the_path()
    {
        using var dir = new Support.TempDir();
        var e = Assert.Throws<ModelConfigException>(() => ModelConfig.Load(dir.Path));
        Assert.Contains(dir.Path, e.Message);
    }

    [Fact]
    public void Heads_not_divisible_by_kv_heads_is_rejected()
    {
        var cfg = CheckpointPresets.Config(ModelArchitecture.Mixtral, CheckpointPreset.Tiny) with { NumKvHeads = 3 };
        var e = Assert.Throws<ModelConfigException>(() => ModelConfig.Parse(cfg.ToJson()));
        Assert.Contains("num_key_value_heads", e.Message);
    }
}
