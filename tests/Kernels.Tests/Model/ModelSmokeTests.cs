using MoeServer.Kernels.Checkpoints;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Model;

namespace MoeServer.Kernels.Tests.Model;

public class ModelSmokeTests
{
    [Theory]
    [InlineData(ModelArchitecture.Mixtral)]
    [InlineData(ModelArchitecture.Qwen2Moe)]
    [InlineData(ModelArchitecture.Qwen3Moe)]
    [InlineData(ModelArchitecture.Olmoe)]
    public void Prefill_then_decode_equals_prefill_of_everything(ModelArchitecture arch)
    {
        string dir = Path.Combine(Path.GetTempPath(), "moe-smoke-" + arch + "-" + Guid.NewGuid().ToString("N"));
        var cfg = CheckpointPresets.Config(arch, CheckpointPreset.Tiny);
        CheckpointGenerator.WriteWeights(cfg, dir, new GeneratorOptions { Seed = 3 });
        using var model = MoeModel.Load(dir, WeightPrecision.F32);
        int[] tokens = [5, 17, 99, 3, 250, 7];
        using var a = model.NewSequence();
        var all = model.ForwardSequence(a, tokens);
        using var b = model.NewSequence();
        model.ForwardSequence(b, tokens[..4]);
        var d1 = model.ForwardSequence(b, [tokens[4]]);
        var d2 = model.ForwardSequence(b, [tokens[5]]);
        double maxDiff = 0, maxRef = 0;
        for (int v = 0; v < cfg.VocabSize; v++)
        {
            maxDiff = Math.Max(maxDiff, Math.Abs(all[5][v] - d2[0][v]));
            maxDiff = Math.Max(maxDiff, Math.Abs(all[4][v] - d1[0][v]));
            maxRef = Math.Max(maxRef, Math.Abs(all[5][v]));
        }
        Assert.True(maxDiff / maxRef < 1e-5, $"{maxDiff / maxRef}");
        Directory.Delete(dir, true);
    }
}
