using MoeServer.Kernels.Checkpoints;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Model;

namespace MoeServer.Tools;

/// <summary>Finds the model directory: --model, or the embedded default generated on first use.</summary>
internal static class ModelLocator
{
    public static string DefaultModelDir()
    {
        string? dir = AppContext.BaseDirectory;
        while (dir is not null && !File.Exists(Path.Combine(dir, "Server.sln"))) dir = Path.GetDirectoryName(dir);
        string root = dir ?? Directory.GetCurrentDirectory();
        return Path.Combine(root, "models", "generated", "small-mixtral");
    }

    public static string Resolve(string? model)
    {
        if (model is not null) return model;
        string dir = DefaultModelDir();
        if (!File.Exists(Path.Combine(dir, "config.json")))
        {
            Console.Error.WriteLine($"no --model given; creating the default checkpoint (mixtral, small preset) in {dir}");
            CheckpointFactory.Create(ModelArchitecture.Mixtral, CheckpointPreset.Small, dir, new GeneratorOptions { Seed = 1 },
                msg => Console.Error.WriteLine(msg));
        }
        return dir;
    }

    public static WeightPrecision ParsePrecision(string? s) => s switch
    {
        null or "bf16" => WeightPrecision.BF16,
        "f32" => WeightPrecision.F32,
        _ => throw new UsageException($"--precision must be bf16 or f32, got '{s}'"),
    };

    public static MoeModel Load(string dir, WeightPrecision precision)
    {
        var progress = new ConsoleProgress("loading");
        var model = MoeModel.Load(dir, precision, (d, t) => progress.Report(d, t));
        var w = model.Weights;
        Console.Error.WriteLine($"loaded {model.Config.Architecture} ({w.ParameterCount() / 1e6:F1}M parameters, {precision}) " +
                                $"in {w.LoadTime.TotalSeconds:F2}s, {w.BytesRead / w.LoadTime.TotalSeconds / 1e9:F2} GB/s");
        return model;
    }
}
