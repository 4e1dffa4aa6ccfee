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

    /// <summary>Opens <paramref name="path"/> with <paramref name="open"/>; a file that cannot be read (missing,
    /// unreadable) becomes a format error naming it, as a broken one does.</summary>
    public static T Opening<T>(string path, Func<T> open)
    {
        try
        {
            return open();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CheckpointFormatException(path, null, $"cannot open: {e.Message}", e);
        }
    }
}
