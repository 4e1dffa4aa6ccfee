using System.Collections.Concurrent;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Formats;

namespace MoeServer.Kernels.Checkpoints;

/// <summary>Options of <see cref="CheckpointGenerator"/>.</summary>
public sealed record GeneratorOptions
{
    public long Seed { get; init; } = 1;
    public TensorDType DType { get; init; } = TensorDType.BF16;
    public int Shards { get; init; } = 1;
    /// <summary>Write experts in the fused transformers-v5 layout (gate_up_proj / down_proj per layer).</summary>
    public bool FusedExperts { get; init; }
    /// <summary>Reports (tensors done, tensors total).</summary>
    public Action<int, int>? Progress { get; init; }
}

/// <summary>
/// Writes a random-weight HF checkpoint (config.json + safetensors) for any supported family. The init is scaled so
/// that logits are peaked (a large LM-head scale) and routing is diverse (a larger router scale): greedy tokens are
/// then rarely decided by near-ties, which is what equality tests need.
/// </summary>
public static class CheckpointGenerator
{
    /// <summary>A tensor to generate: name, shape, and init (std around a center).</summary>
    public sealed record TensorSpec(string Name, long[] Shape, double Std, double Center = 0);

    public static IReadOnlyList<TensorSpec> Specs(ModelConfig cfg, bool fusedExperts)
    {
        int H = cfg.HiddenSize, q = cfg.QWidth, kv = cfg.KvWidth, E = cfg.NumExperts, I = cfg.ExpertIntermediateSize;
        double inH = 1 / Math.Sqrt(H);
        var s = new List<TensorSpec> { new("model.embed_tokens.weight", [cfg.VocabSize, H], 1.0) };
        for (int l = 0; l < cfg.NumLayers; l++)
        {
            string p = $"model.layers.{l}.";
            s.Add(new(p + "input_layernorm.weight", [H], 0.1, 1.0));
            s.Add(new(p + "post_attention_layernorm.weight", [H], 0.1, 1.0));
            s.Add(new(p + "self_attn.q_proj.weight", [q, H], inH));
            s.Add(new(p + "self_attn.k_proj.weight", [kv, H], inH));
            s.Add(new(p + "self_attn.v_proj.weight", [kv, H], inH));
            s.Add(new(p + "self_attn.o_proj.weight", [H, q], 1 / Math.Sqrt(q)));
            if (cfg.QkvBias)
            {
                s.Add(new(p + "self_attn.q_proj.bias", [q], 0.1));
                s.Add(new(p + "self_attn.k_proj.bias", [kv], 0.1));
                s.Add(new(p + "self_attn.v_proj.bias", [kv], 0.1));
            }
            if (cfg.OutputBias) s.Add(new(p + "self_attn.o_proj.bias", [H], 0.1));
            if (cfg.QkNorm == QkNormKind.PerHead)
            {
                s.Add(new(p + "self_attn.q_norm.weight", [cfg.HeadDim], 0.1, 1.0));
                s.Add(new(p + "self_attn.k_norm.weight", [cfg.HeadDim], 0.1, 1.0));
            }
            else if (cfg.QkNorm == QkNormKind.FullWidth)
            {
                s.Add(new(p + "self_attn.q_norm.weight", [q], 0.1, 1.0));
                s.Add(new(p + "self_attn.k_norm.weight", [kv], 0.1, 1.0));
            }
            if (!cfg.IsSparseLayer(l))
            {
                int D = cfg.DenseIntermediateSize;
                s.Add(new(p + "mlp.gate_proj.weight", [D, H], inH));
                s.Add(new(p + "mlp.up_proj.weight", [D, H], inH));
                s.Add(new(p + "mlp.down_proj.weight", [H, D], 1 / Math.Sqrt(D)));
                continue;
            }
            bool mixtral = cfg.Architecture == ModelArchitecture.Mixtral;
            string moe = p + (mixtral && !fusedExperts ? "block_sparse_moe." : "mlp.");
            // A router scale of ~3x makes per-token expert choice decisive instead of near-uniform.
            // (readme_moe layers have no gate: the decoupled router below chooses for every layer.)
            if (cfg.Router is null) s.Add(new(moe + "gate.weight", [E, H], 3 * inH));
            if (fusedExperts)
            {
                s.Add(new(moe + "experts.gate_up_proj", [E, 2 * I, H], inH));
                s.Add(new(moe + "experts.down_proj", [E, H, I], 1 / Math.Sqrt(I)));
            }
            else
            {
                for (int e = 0; e < E; e++)
                {
                    string ep = $"{moe}experts.{e}.";
                    s.Add(new(ep + (mixtral ? "w1.weight" : "gate_proj.weight"), [I, H], inH));
                    s.Add(new(ep + (mixtral ? "w2.weight" : "down_proj.weight"), [H, I], 1 / Math.Sqrt(I)));
                    s.Add(new(ep + (mixtral ? "w3.weight" : "up_proj.weight"), [I, H], inH));
                }
            }
            if (cfg.SharedExpertIntermediateSize > 0)
            {
                int S = cfg.SharedExpertIntermediateSize;
                s.Add(new(p + "mlp.shared_expert.gate_proj.weight", [S, H], inH));
                s.Add(new(p + "mlp.shared_expert.up_proj.weight", [S, H], inH));
                s.Add(new(p + "mlp.shared_expert.down_proj.weight", [H, S], 1 / Math.Sqrt(S)));
                if (cfg.Router is null) s.Add(new(p + "mlp.shared_expert_gate.weight", [1, H], inH));
            }
        }
        if (cfg.Router is { } rc) s.AddRange(RouterSpecs(cfg, rc));
        s.Add(new("model.norm.weight", [H], 0.1, 1.0));
        // Peaked logits: logit std ~ 4 over the vocabulary, so top-2 margins are rarely tiny.
        if (!cfg.TieWordEmbeddings) s.Add(new("lm_head.weight", [cfg.VocabSize, H], 4 * inH));
        return s;
    }

    /// <summary>The decoupled router of <c>readme_moe</c> (ROUTER_DECOUPLED_SPEC.md names).</summary>
    private static IEnumerable<TensorSpec> RouterSpecs(ModelConfig cfg, RouterConfig rc)
    {
        int Hr = rc.HiddenSize, Ir = rc.IntermediateSize;
        double inR = 1 / Math.Sqrt(Hr);
        yield return new("router.embed_tokens.weight", [cfg.VocabSize, Hr], 1.0);
        for (int i = 0; i < rc.NumLayers; i++)
        {
            string p = $"router.layers.{i}.";
            yield return new(p + "input_layernorm.weight", [Hr], 0.1, 1.0);
            yield return new(p + "self_attn.q_proj.weight", [rc.QWidth, Hr], inR);
            yield return new(p + "self_attn.k_proj.weight", [rc.KvWidth, Hr], inR);
            yield return new(p + "self_attn.v_proj.weight", [rc.KvWidth, Hr], inR);
            yield return new(p + "self_attn.o_proj.weight", [Hr, rc.QWidth], 1 / Math.Sqrt(rc.QWidth));
            yield return new(p + "post_attention_layernorm.weight", [Hr], 0.1, 1.0);
            yield return new(p + "mlp.gate_proj.weight", [Ir, Hr], inR);
            yield return new(p + "mlp.up_proj.weight", [Ir, Hr], inR);
            yield return new(p + "mlp.down_proj.weight", [Hr, Ir], 1 / Math.Sqrt(Ir));
        }
        yield return new("router.norm.weight", [Hr], 0.1, 1.0);
        // As the layer-wise gates: a ~3x scale makes the choice decisive.
        yield return new("router.head.weight", [cfg.NumExperts, Hr], 3 * inR);
    }

    /// <summary>Writes config.json and the safetensors of a random checkpoint into <paramref name="dir"/>.</summary>
    public static void WriteWeights(ModelConfig cfg, string dir, GeneratorOptions options)
    {
        Directory.CreateDirectory(dir);
        var specs = Specs(cfg, options.FusedExperts);
        var results = new TensorData[specs.Count];
        int done = 0;
        var parts = Partitioner.Create(0, specs.Count, 1);
        Parallel.ForEach(parts, new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount }, range =>
        {
            for (int i = range.Item1; i < range.Item2; i++)
            {
                var spec = specs[i];
                long n = spec.Shape.Aggregate(1L, (a, b) => a * b);
                var values = new float[n];
                WeightInit.Uniform(values, WeightInit.StreamSeed(options.Seed, spec.Name), spec.Std, spec.Center);
                results[i] = new TensorData(spec.Name, options.DType, spec.Shape, FloatEncoding.Encode(values, options.DType));
                options.Progress?.Invoke(Interlocked.Increment(ref done), specs.Count);
            }
        });
        string torchDtype = options.DType switch
        {
            TensorDType.F32 => "float32",
            TensorDType.F16 => "float16",
            _ => "bfloat16",
        };
        File.WriteAllText(Path.Combine(dir, "config.json"), (cfg with { TorchDtype = torchDtype }).ToJson());
        SafetensorsWriter.WriteSharded(dir, results, options.Shards);
    }
}
