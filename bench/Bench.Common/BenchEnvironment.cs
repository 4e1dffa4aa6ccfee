namespace MoeServer.Bench.Common;

/// <summary>What every bench program needs from its surroundings: the repository root and its options.</summary>
public static class BenchEnvironment
{
    /// <summary>The folder holding Server.sln above the running binary (results go under bench/results there).</summary>
    public static string RepoRoot()
    {
        string? d = AppContext.BaseDirectory;
        while (d is not null && !File.Exists(Path.Combine(d, "Server.sln"))) d = Path.GetDirectoryName(d);
        return d ?? Directory.GetCurrentDirectory();
    }

    /// <summary>The value after <paramref name="name"/> on the command line, or null.</summary>
    public static string? ArgValue(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }
}
