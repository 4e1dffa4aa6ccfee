namespace MoeServer.Kernels.Tokenization;

/// <summary>Loads the tokenizer of a model, wherever it lives: an HF checkpoint directory's tokenizer.json, or the
/// <c>tokenizer.ggml.*</c> metadata of a GGUF file.</summary>
public static class ModelTokenizer
{
    /// <summary>The tokenizer of the model at <paramref name="modelPath"/> (a directory or a .gguf file).</summary>
    public static ITokenizer Load(string modelPath) =>
        Formats.Gguf.GgufModel.IsGgufPath(modelPath) ? GgufTokenizer.Load(modelPath) : HfTokenizer.Load(modelPath);
}
