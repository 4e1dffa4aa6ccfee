using MoeServer.Kernels.Config;
using MoeServer.Kernels.Tokenization;

namespace MoeServer.Kernels.Checkpoints;

/// <summary>
/// make-checkpoint: a complete HF model directory (config.json, safetensors, tokenizer.json,
/// tokenizer_config.json with the family's chat template) with random weights and a BPE learned from the
/// built-in text.
/// </summary>
public static class CheckpointFactory
{
    public static void Create(ModelArchitecture arch, CheckpointPreset preset, string dir, GeneratorOptions options,
        Action<string>? log = null)
    {
        var cfg = CheckpointPresets.Config(arch, preset);
        Create(cfg, dir, options, log);
    }

    public static void Create(ModelConfig cfg, string dir, GeneratorOptions options, Action<string>? log = null)
    {
        Directory.CreateDirectory(dir);
        var (specials, bosId, eosIds, family) = CheckpointPresets.SpecialTokens(cfg.Architecture);
        var bpe = BpeTrainer.Train(BuiltInCorpus.Text, new BpeTrainerOptions
        {
            VocabSize = cfg.VocabSize,
            SpecialTokens = specials,
            SpecialTokensFirst = true,
        });
        bpe = PadVocabulary(bpe, cfg.VocabSize);
        log?.Invoke($"tokenizer: byte-level BPE, {bpe.Merges.Count} merges learned, vocabulary {bpe.VocabSize}");
        TokenizerJsonWriter.WriteToDirectory(bpe, dir);
        string template = family == "mistral" ? ChatTemplates.MistralInstJinja : ChatTemplates.ChatMlJinja;
        TokenizerJsonWriter.WriteTokenizerConfig(dir, bpe,
            bosToken: bosId is { } b ? specials[b] : null,
            eosToken: specials[eosIds[0]],
            chatTemplate: template,
            modelMaxLength: cfg.MaxPositionEmbeddings);
        CheckpointGenerator.WriteWeights(cfg, dir, options);
    }

    /// <summary>
    /// The built-in text is too small to learn 32k merges; the rest of the embedding rows get reserved added tokens
    /// (as Llama 3 does), so every id the model can emit decodes to something.
    /// </summary>
    private static BpeModel PadVocabulary(BpeModel bpe, int vocabSize)
    {
        if (bpe.VocabSize > vocabSize)
            throw new InvalidOperationException($"tokenizer has {bpe.VocabSize} tokens, more than vocab_size {vocabSize}");
        if (bpe.VocabSize == vocabSize) return bpe;
        var added = bpe.AddedTokens.ToList();
        for (int id = bpe.VocabSize; id < vocabSize; id++)
            added.Add(new AddedToken(id, $"<|reserved_{id}|>", Special: false));
        return new BpeModel(bpe.Vocab, bpe.Merges, added);
    }
}
