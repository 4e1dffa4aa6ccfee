using System.Diagnostics;
using MoeServer.Kernels.Formats.Gguf;

namespace MoeServer.Tools;

/// <summary>export-gguf: an HF checkpoint of a layer-wise family as a GGUF file llama.cpp loads.</summary>
internal static class ExportGgufCommand
{
    public static int Run(string[] args)
    {
        var cl = new CommandLine(args, new HashSet<string>());
        string dir = cl.Required("model");
        string output = cl.Required("out");
        string type = cl.String("type") ?? "f32";
        cl.RejectUnknown();
        var ggml = type.ToLowerInvariant() switch
        {
            "f32" => GgmlType.F32,
            "bf16" => GgmlType.BF16,
            _ => throw new UsageException($"--type {type}: f32 or bf16"),
        };
        if (!Directory.Exists(dir)) throw new UsageException($"--model {dir} is not a directory");
        var sw = Stopwatch.StartNew();
        Console.Error.WriteLine($"export-gguf: reading {dir}");
        var file = GgufExporter.Build(dir, ggml);
        GgufWriter.Write(output, file);
        long bytes = new FileInfo(output).Length;
        Console.WriteLine($"wrote {output}: {file.Tensors.Count} tensors, {file.Metadata.Count} metadata keys, " +
                          $"{bytes / (1024.0 * 1024):F1} MiB ({type}, arch {file.Get("general.architecture")!.AsString()}) in {sw.Elapsed.TotalSeconds:F1} s");
        return 0;
    }
}
