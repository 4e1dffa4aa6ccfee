using System.Diagnostics;
using MoeServer.Kernels.Formats.Gguf;

namespace MoeServer.Tools;

/// <summary>export-gguf: an HF checkpoint of a layer-wise family as a GGUF file llama.cpp loads.</summary>
internal static class ExportGgufCommand
{
    public static int Run(string[] args)
    {
        var cl = new CommandLine(args, new HashSet<string> { "per-expert" });
        string dir = cl.Required("model");
        string output = cl.Required("out");
        string type = cl.String("type") ?? "f32";
        bool perExpert = cl.Flag("per-expert");
        int splits = cl.Int("splits", 1);
        string? spm = cl.String("spm");
        cl.RejectUnknown();
        var ggml = type.ToLowerInvariant() switch
        {
            "f32" => GgmlType.F32,
            "f16" => GgmlType.F16,
            "bf16" => GgmlType.BF16,
            _ => throw new UsageException($"--type {type}: f32, f16 or bf16"),
        };
        if (!Directory.Exists(dir)) throw new UsageException($"--model {dir} is not a directory");
        if (splits < 1) throw new UsageException($"--splits {splits}: at least 1");
        if (spm is not null && !File.Exists(spm)) throw new UsageException($"--spm {spm}: no such file (an spm_train .vocab file)");
        var sw = Stopwatch.StartNew();
        Console.Error.WriteLine($"export-gguf: reading {dir}");
        var options = new GgufExportOptions { Type = ggml, PerExpert = perExpert, Splits = splits, SpmVocab = spm };
        var file = GgufExporter.Build(dir, options);
        var paths = splits > 1 ? GgufWriter.WriteSplit(output, file, splits) : [output];
        if (splits == 1) GgufWriter.Write(output, file);
        long bytes = paths.Sum(p => new FileInfo(p).Length);
        Console.WriteLine($"wrote {string.Join(", ", paths)}: {file.Tensors.Count} tensors, {file.Metadata.Count} metadata keys, " +
                          $"{bytes / (1024.0 * 1024):F1} MiB ({type}, arch {file.Get("general.architecture")!.AsString()}" +
                          $"{(perExpert ? ", per-expert tensors" : "")}{(spm is null ? "" : ", SentencePiece vocabulary")}) in {sw.Elapsed.TotalSeconds:F1} s");
        return 0;
    }
}
