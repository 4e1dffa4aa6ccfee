namespace MoeServer.Kernels.Checkpoints;

/// <summary>
/// The default model of the server and the tools: <c>models/readme-moe</c> under the repository root (the directory
/// holding Server.sln above the running binaries, else the current directory), the router-decoupled MoE the project
/// trained on the King James Bible and the Jargon File and committed (models/readme-moe/MODEL_CARD.md). Used when no
/// model directory is given.
/// </summary>
public static class DefaultModel
{
    public const string Name = "readme-moe";

    /// <summary>Where the default checkpoint lives (whether or not it is there).</summary>
    public static string Directory()
    {
        string? dir = AppContext.BaseDirectory;
        while (dir is not null && !File.Exists(Path.Combine(dir, "Server.sln"))) dir = Path.GetDirectoryName(dir);
        string root = dir ?? System.IO.Directory.GetCurrentDirectory();
        return Path.Combine(root, "models", Name);
    }

    /// <summary><paramref name="model"/> when given; otherwise the committed default model's directory.</summary>
    public static string Resolve(string? model, Action<string>? log = null)
    {
        if (!string.IsNullOrEmpty(model)) return model;
        string dir = Directory();
        if (!File.Exists(Path.Combine(dir, "config.json")))
            throw new FileNotFoundException(
                $"no --model given and the default model is missing: {dir} has no config.json. It is committed with the " +
                $"repository (git checkout -- models/{Name}); or pass --model DIR with any HF checkpoint directory.",
                Path.Combine(dir, "config.json"));
        log?.Invoke($"no --model given; serving the default model {dir}");
        return dir;
    }
}
