using System.Collections.Concurrent;
using MoeServer.Kernels.Checkpoints;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Formats;

namespace MoeServer.Kernels.Tests.Support;

/// <summary>
/// Generated tiny checkpoints shared by the tests of one run (generation is deterministic, so sharing is safe):
/// one directory per (family, variant), created on first use, deleted when the test process exits.
/// </summary>
public static class TinyCheckpoints
{
    private static readonly string Root = Path.Combine(Path.GetTempPath(), "moe-tiny-" + Environment.ProcessId);
    private static readonly ConcurrentDictionary<string, Lazy<string>> Dirs = new();

    static TinyCheckpoints()
    {
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try
            {
                Directory.Delete(Root, true);
            }
            catch (IOException)
            {
            }
        };
    }

    /// <summary>A full tiny checkpoint (weights + tokenizer) of the family.</summary>
    public static string Get(ModelArchitecture arch, string variant = "plain", TensorDType dtype = TensorDType.BF16,
        bool fused = false, int shards = 1, Func<ModelConfig, ModelConfig>? edit = null)
    {
        string key = $"{arch}-{variant}-{dtype}-{fused}-{shards}";
        return Dirs.GetOrAdd(key, k => new Lazy<string>(() =>
        {
            string dir = Path.Combine(Root, k);
            var cfg = CheckpointPresets.Config(arch, CheckpointPreset.Tiny);
            if (edit is not null) cfg = edit(cfg);
            CheckpointFactory.Create(cfg, dir, new GeneratorOptions { Seed = 7, DType = dtype, FusedExperts = fused, Shards = shards });
            return dir;
        })).Value;
    }
}
