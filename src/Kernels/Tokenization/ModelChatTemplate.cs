using MoeServer.Kernels.Formats.Gguf;

namespace MoeServer.Kernels.Tokenization;

/// <summary>The chat template of a model, wherever it lives: an HF directory (<see cref="ChatTemplate.Load"/>) or a
/// GGUF file's <c>tokenizer.chat_template</c>, rendered with the file's own bos/eos tokens.</summary>
public static class ModelChatTemplate
{
    public static ChatTemplate Load(string modelPath, string? overrideName = null)
    {
        if (!GgufModel.IsGgufPath(modelPath)) return ChatTemplate.Load(modelPath, overrideName);
        using var f = GgufMappedFile.Open(modelPath);
        var tok = GgufTokenizer.FromMetadata(f);
        if (overrideName is not null) return ChatTemplate.FromOverride(overrideName, tok.BosToken, tok.EosToken);
        if (f.Get("tokenizer.chat_template")?.Value is not string template)
            throw new ChatTemplateException($"No chat template found: {modelPath} has no tokenizer.chat_template in its metadata.");
        return ChatTemplate.FromJinja(template, tok.BosToken, tok.EosToken, $"{modelPath} (tokenizer.chat_template)");
    }
}
