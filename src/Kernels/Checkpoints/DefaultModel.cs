using MoeServer.Kernels.Config;

namespace MoeServer.Kernels.Checkpoints;

/// <summary>
/// The embedded default model: <c>models/generated/small-mixtral</c> under the repository root (the directory holding
/// Server.sln above the running binaries, else the current directory), a small random-weight Mixtral checkpoint
/// created on first use. Used by the tools and the server when no model directory is given.
/// </summary>
public static class DefaultModel
{
    public const ModelArchitecture Architecture = ModelArchitecture.Mixtral;
    public const CheckpointPreset Preset = CheckpointPreset.Small;
    public const int Seed = 1;

    /// <summary>Where the default checkpoint lives (whether or not it exists yet).</summary>
    public static string Directory()
    {
        string? dir = AppContext.BaseDirectory;
        while (dir is not null && !File.Exists(Path.Combine(dir, "Server.sln"))) dir = Path.GetDirectoryName(dir);
        string root = dir ?? System.IO.Directory.GetCurrentDirectory();
        return Path.Combine(root, "models", "generated", "small-mixtral");
    }

    /// <summary>
    /// <paramref name="model"/> when given; otherwise the default directory, created first if it holds no config.json.
    /// The checkpoint is written to a temporary sibling and moved into place, so processes starting together never
    /// see half a checkpoint.
    /// </summary>
    public static string Resolve(string? model, Action<string>? log = null)
    {
        if (!string.IsNullOrEmpty(model)) return model;
        string dir = Directory();
        if (File.Exists(Path.Combine(dir, "config.json"))) return dir;
        log?.Invoke($"no --model given; creating the default checkpoint ({Architecture.ToString().ToLowerInvariant()}, " +
                    $"{Preset.ToString().ToLowerInvariant()} preset) in {dir}");
        string tmp = $"{dir}.tmp-{Environment.ProcessId}";
        if (System.IO.Directory.Exists(tmp)) System.IO.Directory.Delete(tmp, true);
        CheckpointFactory.Create(Architecture, Preset, tmp, new GeneratorOptions { Seed = Seed }, log);
        try
        {
            if (System.IO.Directory.Exists(dir) && !File.Exists(Path.Combine(dir, "config.json")))
                System.IO.Directory.Delete(dir, true); // an empty or partial directory from an older version
            System.IO.Directory.Move(tmp, dir);
        }
        catch (IOException) when (File.Exists(Path.Combine(dir, "config.json")))
        {
            // Another process created it first; theirs is identical (same preset and seed).
            System.IO.Directory.Delete(tmp, true);
        }
        return dir;
    }
}
