using LLama;
using LLama.Common;
using LLama.Native;
using MoeServer.Kernels.Checkpoints;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Formats;
using MoeServer.Kernels.Formats.Gguf;
using MoeServer.Kernels.Model;
using TorchSharp;

namespace MoeServer.Bench.Peers;

/// <summary>
/// Every exported family against llama.cpp on random weights (the `small` preset, f32): the same prompt's logits at
/// every position and a greedy continuation, ours vs llama.cpp's. Random routing is near-uniform, so this checks the
/// export's layout (names, shapes, permutations, norms, biases, shared experts), not model quality.
/// </summary>
internal static class FamilyCheck
{
    public sealed record Result(string Family, string Arch, double MaxLogitDiff, double MedianPositionDiff, int WorstPosition, double LogitScale, double WorstRouterMargin, double MedianRouterMargin, int GreedyEqual, int Greedy);

    public static IEnumerable<Result> Run(int threads, int greedyTokens, Action<string> log)
    {
        foreach (var family in new[] { ModelArchitecture.Mixtral, ModelArchitecture.Qwen2Moe, ModelArchitecture.Qwen3Moe, ModelArchitecture.Olmoe })
        {
            string name = ModelArchitectureNames.ToModelType(family);
            string dir = Path.Combine(Path.GetTempPath(), $"peers-family-{name}");
            if (!File.Exists(Path.Combine(dir, "model.safetensors")))
            {
                var cfg = CheckpointPresets.Config(family, CheckpointPreset.Small);
                if (family == ModelArchitecture.Olmoe) cfg = cfg with { NumKvHeads = cfg.NumHeads }; // as OLMoE is (llama.cpp has no GQA for it)
                CheckpointFactory.Create(cfg, dir, new GeneratorOptions { Seed = 3, DType = TensorDType.F32 });
            }
            string gguf = dir + ".gguf";
            var file = GgufExporter.Build(dir, GgmlType.F32);
            GgufWriter.Write(gguf, file);
            log($"{name}: exported as {file.Get("general.architecture")!.AsString()}");
            using var ours = MoeModel.Load(dir, WeightPrecision.F32);
            int vocab = ours.Config.VocabSize;
            var p = PeerSettings.Exact(gguf, 256, threads);
            using var weights = LLamaWeights.LoadFromFile(p);
            using var ctx = weights.CreateContext(p);
            var rng = new Random(5);
            var prompt = Enumerable.Range(0, 24).Select(_ => 10 + rng.Next(vocab - 20)).ToList();

            float[][] Peer(IReadOnlyList<int> tokens)
            {
                ctx.NativeHandle.MemoryClear();
                var batch = new LLamaBatch();
                for (int i = 0; i < tokens.Count; i++) batch.Add((LLamaToken)tokens[i], i, LLamaSeqId.Zero, true);
                if (ctx.NativeHandle.Decode(batch) != DecodeResult.Ok) throw new InvalidOperationException("llama.cpp decode failed");
                return Enumerable.Range(0, tokens.Count).Select(i => ctx.NativeHandle.GetLogitsIth(i)[..vocab].ToArray()).ToArray();
            }
            float[][] Ours(IReadOnlyList<int> tokens)
            {
                using var seq = ours.NewSequence(tokens.Count);
                return ours.ForwardSequence(seq, tokens);
            }
            var a = Ours(prompt);
            var b = Peer(prompt);
            var perPosition = a.Zip(b).Select(r => (double)r.First.Zip(r.Second).Max(x => Math.Abs(x.First - x.Second))).ToArray();
            double diff = perPosition.Max();
            int worst = Array.IndexOf(perPosition, diff);
            double median = perPosition.Order().ElementAt(perPosition.Length / 2);
            double scale = a.Max(r => r.Max(Math.Abs));
            var margins = RouterMargins(ours, prompt);
            int equal = 0;
            int n = greedyTokens;
            var sa = prompt.ToList();
            var sb = prompt.ToList();
            for (int i = 0; i < n; i++)
            {
                int ta = ArgMax(Ours(sa)[^1]), tb = ArgMax(Peer(sb)[^1]);
                sa.Add(ta);
                sb.Add(tb);
                if (ta != tb) break;
                equal++;
            }
            yield return new Result(name, file.Get("general.architecture")!.AsString(), diff, median, worst, scale, margins[worst], margins.Order().ElementAt(margins.Length / 2), equal, n);
        }
    }

    /// <summary>Per position, the smallest gap over the sparse layers between the k-th and (k+1)-th router logit: where
    /// it is within float rounding, the two implementations may pick different experts and their logits part.</summary>
    private static double[] RouterMargins(MoeModel model, List<int> tokens)
    {
        using var grad = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        using var seq = model.NewSequence(tokens.Count);
        var batch = new BatchLayout([new BatchSegment(seq, tokens, null)]);
        var margins = Enumerable.Repeat(double.PositiveInfinity, tokens.Count).ToArray();
        int k = model.Config.NumExpertsPerToken, E = model.Config.NumExperts;
        var x = model.Embed(batch);
        for (int l = 0; l < model.Config.NumLayers; l++)
        {
            x = model.AttentionBlock(l, x, batch);
            if (model.Weights.Layers[l].Router is { } router)
            {
                var logits = TorchInterop.ToFloatArray(torch.matmul(model.MlpInput(l, x), router.t()));
                for (int t = 0; t < tokens.Count; t++)
                {
                    var sorted = logits.AsSpan(t * E, E).ToArray().OrderDescending().ToArray();
                    margins[t] = Math.Min(margins[t], sorted[k - 1] - sorted[k]);
                }
            }
            x = model.MlpBlock(l, x, batch);
        }
        return margins;
    }

    private static int ArgMax(float[] x)
    {
        int best = 0;
        for (int i = 1; i < x.Length; i++) if (x[i] > x[best]) best = i;
        return best;
    }
}
