using MoeServer.Kernels.Checkpoints;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Model;

namespace MoeServer.Tools;

/// <summary>Finds the model directory: --model, or the embedded default generated on first use.</summary>
internal static class ModelLocator
{
    public static string Resolve(string? model) => DefaultModel.Resolve(model, msg => Console.Error.WriteLine(msg));

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
