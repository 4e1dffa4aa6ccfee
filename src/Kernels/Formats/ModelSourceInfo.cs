using MoeServer.Kernels.Config;
using MoeServer.Kernels.Formats.Gguf;

namespace MoeServer.Kernels.Formats;

/// <summary>Where a model was loaded from, as /v1/models reports it: <c>safetensors</c> (an HF directory) or
/// <c>gguf</c>, the architecture as the source names it (<c>general.architecture</c>, or config.json's model_type),
/// the context length, the GGUF file type (ALL_F32, MOSTLY_BF16, ...) and the files.</summary>
public sealed record ModelSourceInfo(string Format, string Architecture, int ContextLength, string? FileType, IReadOnlyList<string> Files)
{
    public static ModelSourceInfo Describe(string modelPath, ModelConfig config)
    {
        if (GgufModel.IsGgufPath(modelPath))
        {
            using var f = GgufMappedFile.Open(modelPath);
            string arch = f.Get("general.architecture")?.Value as string ?? "?";
            int ctx = GgufModel.IntOf(f, $"{arch}.context_length") ?? config.MaxPositionEmbeddings;
            string? fileType = GgufModel.IntOf(f, "general.file_type") switch
            {
                null => null,
                0 => "ALL_F32",
                1 => "MOSTLY_F16",
                32 => "MOSTLY_BF16",
                int t => $"file type {t}",
            };
            return new ModelSourceInfo("gguf", arch, ctx, fileType, GgufModel.FilePaths(modelPath).Select(Path.GetFileName).ToList()!);
        }
        return new ModelSourceInfo("safetensors", config.Architecture.ToModelType(), config.MaxPositionEmbeddings, null,
            Checkpoint.FilePaths(modelPath).Select(Path.GetFileName).ToList()!);
    }

    /// <summary>A display name for the model: the directory's name, or the GGUF file's name without the extension
    /// and split suffix.</summary>
    public static string DisplayName(string modelPath)
    {
        if (!GgufModel.IsGgufPath(modelPath)) return new DirectoryInfo(modelPath).Name;
        string name = Path.GetFileName(modelPath);
        if (name.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase)) name = name[..^5];
        var m = System.Text.RegularExpressions.Regex.Match(name, @"^(.*)-\d{5}-of-\d{5}$");
        return m.Success ? m.Groups[1].Value : name;
    }
}
