using MoeServer.Kernels.Checkpoints;
using MoeServer.Kernels.Config;

namespace MoeServer.Gateway.Tests;

/// <summary>One tiny generated Mixtral checkpoint shared by every test of the run, deleted when the test process exits.</summary>
public static class TinyModel
{
    private static readonly Lazy<string> Created = new(() =>
    {
        string dir = Path.Combine(Path.GetTempPath(), "moe-gateway-tests-" + Environment.ProcessId, "mixtral-tiny");
        CheckpointFactory.Create(CheckpointPresets.Config(ModelArchitecture.Mixtral, CheckpointPreset.Tiny), dir,
            new GeneratorOptions { Seed = 7 });
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try
            {
                Directory.Delete(Path.GetDirectoryName(dir)!, true);
            }
            catch (IOException)
            {
            }
        };
        return dir;
    });

    public static string Dir => Created.Value;
}
