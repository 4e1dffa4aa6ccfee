namespace MoeServer.Kernels.Tests.Support;

/// <summary>The repository's committed trained models (models/readme-moe, models/mixtral-moe) and their corpus.</summary>
public static class TrainedModels
{
    public static string RepoRoot()
    {
        var d = new DirectoryInfo(AppContext.BaseDirectory);
        while (d is not null && !File.Exists(Path.Combine(d.FullName, "Server.sln"))) d = d.Parent;
        return d?.FullName ?? throw new InvalidOperationException("repository root not found above " + AppContext.BaseDirectory);
    }

    /// <summary>models/<paramref name="name"/>; fails the test when its weights are not there.</summary>
    public static string Dir(string name)
    {
        string dir = Path.Combine(RepoRoot(), "models", name);
        Assert.True(File.Exists(Path.Combine(dir, "model.safetensors")), $"{dir} has no model.safetensors (a committed trained model)");
        return dir;
    }

    /// <summary>A file of models/corpus (e.g. the held-out text a model card names).</summary>
    public static string CorpusFile(string name) => Path.Combine(RepoRoot(), "models", "corpus", name);
}
