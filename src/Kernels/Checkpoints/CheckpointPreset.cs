using MoeServer.Kernels.Config;

namespace MoeServer.Kernels.Checkpoints;

/// <summary>Model sizes the generator knows: tiny (unit tests), small (engine tests), bench (Mixtral-shaped, memory-bound).</summary>
public enum CheckpointPreset
{
    Tiny,
    Small,
    Bench,
}

public static class CheckpointPresets
{
    public static CheckpointPreset Parse(string name) => name switch
    {
        "tiny" => CheckpointPreset.Tiny,
        "small" => CheckpointPreset.Small,
        "bench" => CheckpointPreset.Bench,
        _ => throw new ArgumentException($"unknown preset '{name}' (expected tiny, small or bench)"),
    };

    /// <summary>The config.json a preset produces for a family.</summary>
    public static ModelConfig Config(ModelArchitecture arch, CheckpointPreset preset)
    {
        (int h, int layers, int heads, int kv, int hd, int experts, int topK, int ffn, int vocab, double theta) = preset switch
        {
            CheckpointPreset.Tiny => (64, 2, 4, 2, 16, 4, 2, 96, 512, 10000.0),
            CheckpointPreset.Small => (256, 4, 8, 4, 32, 8, 2, 704, 4096, 10000.0),
            _ => (1024, 16, 16, 8, 64, 8, 2, 2816, 32000, 1e6),
        };
        bool tiny = preset == CheckpointPreset.Tiny;
        var special = SpecialTokens(arch);
        var cfg = new ModelConfig
        {
            Architecture = arch,
            HiddenSize = h,
            NumLayers = layers,
            NumHeads = heads,
            NumKvHeads = kv,
            HeadDim = hd,
            VocabSize = vocab,
            RmsNormEps = 1e-5,
            RopeTheta = theta,
            MaxPositionEmbeddings = preset == CheckpointPreset.Bench ? 32768 : 4096,
            NumExperts = experts,
            NumExpertsPerToken = topK,
            ExpertIntermediateSize = ffn,
            // Only Qwen-MoE has a separate dense-MLP width; elsewhere it equals the expert width.
            DenseIntermediateSize = arch is ModelArchitecture.Qwen2Moe or ModelArchitecture.Qwen3Moe ? 2 * ffn : ffn,
            NormTopKProb = arch is ModelArchitecture.Mixtral or ModelArchitecture.Qwen3Moe,
            TorchDtype = "bfloat16",
            BosTokenId = special.BosId,
            EosTokenIds = special.EosIds,
        };
        return arch switch
        {
            ModelArchitecture.Qwen2Moe => cfg with
            {
                QkvBias = true,
                SharedExpertIntermediateSize = 2 * ffn,
                // tiny exercises the dense-layer path too.
                MlpOnlyLayers = tiny ? [1] : [],
            },
            ModelArchitecture.Qwen3Moe => cfg with
            {
                QkNorm = QkNormKind.PerHead,
                QkvBias = tiny,
                OutputBias = tiny,
                MlpOnlyLayers = tiny ? [1] : [],
            },
            ModelArchitecture.Olmoe => cfg with
            {
                QkNorm = QkNormKind.FullWidth,
                ClipQkv = tiny ? 2.0 : null,
            },
            // Read-ME style: top-1 from the decoupled router, plus a permanent expert; the router is a quarter-width
            // Llama with two blocks (one on tiny).
            ModelArchitecture.RouterDecoupled => cfg with
            {
                NumExpertsPerToken = tiny ? 2 : 1,
                SharedExpertIntermediateSize = ffn / 2,
                NormTopKProb = false,
                Router = new RouterConfig(h / 4, tiny ? 1 : 2, Math.Max(2, heads / 4), Math.Max(1, kv / 4), h / 4 / Math.Max(2, heads / 4), h / 2),
            },
            _ => cfg,
        };
    }

    /// <summary>Special tokens of each family's tokenizer, in id order from 0, and which are bos/eos.</summary>
    public static (IReadOnlyList<string> Tokens, int? BosId, IReadOnlyList<int> EosIds, string ChatTemplateFamily) SpecialTokens(ModelArchitecture arch) =>
        arch switch
        {
            ModelArchitecture.Mixtral => (["<unk>", "<s>", "</s>", "[INST]", "[/INST]"], 1, [2], "mistral"),
            // ChatML families: <|endoftext|> doubles as bos; generation ends at <|im_end|> (or <|endoftext|>).
            _ => (["<|endoftext|>", "<|im_start|>", "<|im_end|>"], 0, [2, 0], "chatml"),
        };
}
