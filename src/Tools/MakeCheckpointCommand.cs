using System.Diagnostics;
using MoeServer.Kernels.Checkpoints;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Formats;

namespace MoeServer.Tools;

internal static class MakeCheckpointCommand
{
    public static int Run(string[] args)
    {
        var cl = new CommandLine(args, new HashSet<string> { "fused-experts" });
        string archName = cl.Required("arch");
        if (!ModelArchitectureNames.TryParse(archName, out var arch))
            throw new UsageException($"--arch must be mixtral, qwen2_moe, qwen3_moe, olmoe or readme_moe, got '{archName}'");
        var preset = ParsePreset(cl.Required("preset"));
        string dir = cl.Required("out");
        var options = new GeneratorOptions
        {
            Seed = cl.Long("seed", 1),
            Shards = cl.Int("shards", 1),
            DType = ParseDType(cl.String("dtype") ?? "bf16"),
            FusedExperts = cl.Flag("fused-experts"),
        };
        cl.RejectUnknown();
        if (options.Shards < 1) throw new UsageException("--shards must be at least 1");
        var sw = Stopwatch.StartNew();
        var progress = new ConsoleProgress("weights");
        CheckpointFactory.Create(arch, preset, dir, options with { Progress = (d, t) => progress.Report(d, t) },
            msg => Console.Error.WriteLine(msg));
        Console.Error.WriteLine($"wrote {archName}/{preset.ToString().ToLowerInvariant()} checkpoint to {dir} in {sw.Elapsed.TotalSeconds:F1}s");
        return 0;
    }

    private static CheckpointPreset ParsePreset(string s)
    {
        try
        {
            return CheckpointPresets.Parse(s);
        }
        catch (ArgumentException e)
        {
            throw new UsageException(e.Message);
        }
    }

    private static TensorDType ParseDType(string s) => s switch
    {
        "bf16" => TensorDType.BF16,
        "f32" => TensorDType.F32,
        "f16" => TensorDType.F16,
        _ => throw new UsageException($"--dtype must be bf16, f32 or f16, got '{s}'"),
    };
}
