using LLama;
using LLama.Common;
using LLama.Native;
using MoeServer.Kernels.Checkpoints;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Formats;
using MoeServer.Kernels.Formats.Gguf;
using MoeServer.Kernels.Model;

namespace MoeServer.Bench.Peers;

/// <summary>
/// Every exported family against llama.cpp on random weights (the `small` preset, f32): the same prompt's logits at
/// every position and a greedy continuation, ours vs llama.cpp's. Random routing is near-uniform, so this checks the
/// export's layout (names, shapes, permutations, norms, biases, shared experts), not model quality.
/// </summary>
internal static class FamilyCheck
{
    public sealed record Result(string Family, string Arch, double MaxLogitDiff, int GreedyEqual, int Greedy);

    public static IEnumerable<Result> Run(int threads, Action<string> log)
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
            var p = new ModelParams(gguf) { ContextSize = 256, BatchSize = 256, UBatchSize = 256, GpuLayerCount = 0, Threads = threads };
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
            double diff = a.Zip(b).Max(r => r.First.Zip(r.Second).Max(x => Math.Abs(x.First - x.Second)));
            int equal = 0;
            const int n = 12;
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
            yield return new Result(name, file.Get("general.architecture")!.AsString(), diff, equal, n);
        }
    }

    private static int ArgMax(float[] x)
    {
        int best = 0;
        for (int i = 1; i < x.Length; i++) if (x[i] > x[best]) best = i;
        return best;
    }
}
