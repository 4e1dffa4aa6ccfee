namespace MoeServer.Kernels.Formats;

/// <summary>A checkpoint file is broken or disagrees with config.json. The message names the file and tensor.</summary>
public sealed class CheckpointFormatException : Exception
{
    public CheckpointFormatException(string file, string? tensor, string problem, Exception? inner = null)
        : base(tensor is null ? $"{file}: {problem}" : $"{file}: tensor '{tensor}': {problem}", inner)
    {
        File = file;
        Tensor = tensor;
    }

    public string File { get; }
    public string? Tensor { get; }
}
