using MoeServer.Kernels.Checkpoints;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Formats;
using MoeServer.Kernels.Model;
using MoeServer.Tools.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace MoeServer.Tools.Tests;

/// <summary>The trainable mixtral-format model: what it learns is what the server then serves.</summary>
public sealed class TrainingModelTests
{
    private static ModelConfig TinyConfig(ModelArchitecture arch = ModelArchitecture.Mixtral) => CheckpointPresets.Config(arch, CheckpointPreset.Tiny);

    [Theory]
    [InlineData(ModelArchitecture.Mixtral)]
    [InlineData(ModelArchitecture.RouterDecoupled)]
    public void An_exported_training_model_gives_the_serving_runtime_the_same_logits(ModelArchitecture arch)
    {
        using var dir = new TempDir();
        var cfg = TinyConfig(arch);
        CheckpointFactory.Create(cfg, dir.Sub("tokenizer"), new GeneratorOptions { Seed = 3 });
        using var model = new MoeTrainingModel(cfg, seed: 5);
        model.eval();
        int[] tokens = [5, 17, 3, 99, 42, 7, 250, 1, 64, 33];
        float[] want;
        using (torch.no_grad())
        {
            using var ids = torch.tensor(tokens.Select(t => (long)t).ToArray(), [1, tokens.Length]);
            var (logits, balance) = model.forward(ids);
            using var _ = balance;
            using var flat = logits.reshape(-1);
            want = flat.data<float>().ToArray();
            logits.Dispose();
        }
        Assert.All(want, x => Assert.True(float.IsFinite(x)));
        // The seed fixes every weight: a second model gives the same logits bit for bit.
        using (var twin = new MoeTrainingModel(cfg, seed: 5))
        using (torch.no_grad())
        {
            twin.eval();
            using var ids = torch.tensor(tokens.Select(t => (long)t).ToArray(), [1, tokens.Length]);
            var (logits, balance) = twin.forward(ids);
            using var _ = balance;
            using var flat = logits.reshape(-1);
            Assert.Equal(want, flat.data<float>().ToArray());
            logits.Dispose();
        }
        HfCheckpointExport.Write(model, dir.Sub("model"), TensorDType.F32, dir.Sub("tokenizer"));

        using var served = MoeModel.Load(dir.Sub("model"), WeightPrecision.F32);
        using var seq = served.NewSequence();
        var got = served.ForwardSequence(seq, tokens);
        int v = cfg.VocabSize;
        double maxDiff = 0, maxAbs = 0;
        for (int t = 0; t < tokens.Length; t++)
        {
            for (int i = 0; i < v; i++)
            {
                maxDiff = Math.Max(maxDiff, Math.Abs(got[t][i] - want[t * v + i]));
                maxAbs = Math.Max(maxAbs, Math.Abs(want[t * v + i]));
            }
            Assert.Equal(Array.IndexOf(got[t], got[t].Max()), ArgMax(want.AsSpan(t * v, v)));
        }
        Assert.True(maxDiff < 1e-3 * Math.Max(1, maxAbs), $"largest logit difference {maxDiff:G3} (largest logit {maxAbs:G3})");
    }

    [Theory]
    [InlineData(ModelArchitecture.Mixtral)]
    [InlineData(ModelArchitecture.RouterDecoupled)]
    public void A_few_adamw_steps_learn_a_repeated_text_and_use_every_expert(ModelArchitecture arch)
    {
        var cfg = TinyConfig(arch);
        using var model = new MoeTrainingModel(cfg, seed: 1);
        model.train();
        using var optimizer = torch.optim.AdamW(model.parameters(), lr: 3e-3, weight_decay: 0.0);
        var rng = new Random(2);
        int[] pattern = Enumerable.Range(0, 24).Select(_ => rng.Next(cfg.VocabSize)).ToArray();
        long[] batch = Enumerable.Range(0, 4 * 33).Select(i => (long)pattern[(i + i / 33 * 5) % pattern.Length]).ToArray();
        using var all = torch.tensor(batch, [4, 33]);
        using var input = all.narrow(1, 0, 32);
        using var target = all.narrow(1, 1, 32);
        double first = 0, last = 0, balance = 0;
        for (int step = 0; step < 40; step++)
        {
            using var scope = torch.NewDisposeScope();
            optimizer.zero_grad();
            var (logits, aux) = model.forward(input);
            var ce = nn.functional.cross_entropy(logits.reshape(-1, cfg.VocabSize), target.reshape(-1));
            var loss = ce + aux * 0.01;
            loss.backward();
            nn.utils.clip_grad_norm_(model.parameters(), 1.0);
            optimizer.step();
            if (step == 0) first = ce.item<float>();
            last = ce.item<float>();
            balance = aux.item<float>();
        }
        Assert.True(last < first * 0.5, $"cross-entropy went from {first:F3} to {last:F3}");
        // Balance loss is 1 when the routed slots follow the router's probabilities uniformly, up to E when collapsed.
        Assert.True(balance < 1.5, $"load-balancing loss {balance:F3}: the router collapsed onto few experts");
    }

    private static int ArgMax(ReadOnlySpan<float> x)
    {
        int best = 0;
        for (int i = 1; i < x.Length; i++) if (x[i] > x[best]) best = i;
        return best;
    }
}
