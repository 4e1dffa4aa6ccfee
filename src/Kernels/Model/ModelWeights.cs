using System.Diagnostics;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Formats;
using TorchSharp;
using static TorchSharp.torch;

namespace MoeServer.Kernels.Model;

/// <summary>
/// All weights of a checkpoint, read from the memory-mapped safetensors into tensors of the chosen precision.
/// Accepts per-expert tensor names and the fused transformers-v5 layout; every tensor's shape is checked against
/// config.json and a mismatch names the file and tensor.
/// </summary>
public sealed class ModelWeights : IDisposable
{
    public required ModelConfig Config { get; init; }
    public required Tensor Embedding { get; init; }
    public required IReadOnlyList<DecoderLayerWeights> Layers { get; init; }
    public required Tensor FinalNorm { get; init; }
    public required Linear LmHead { get; init; }
    /// <summary>Bytes read from the checkpoint files.</summary>
    public long BytesRead { get; init; }
    public bool TiedLmHead { get; init; }
    public TimeSpan LoadTime { get; init; }

    /// <summary>Reports (tensors done, tensors total) while loading.</summary>
    public delegate void LoadProgress(int done, int total);

    public static ModelWeights Load(string dir, WeightPrecision precision, LoadProgress? progress = null)
    {
        var cfg = ModelConfig.Load(dir);
        using var ck = Checkpoint.Open(dir);
        return Load(cfg, ck, precision, progress);
    }

    public static ModelWeights Load(ModelConfig cfg, Checkpoint ck, WeightPrecision precision, LoadProgress? progress = null)
    {
        var sw = Stopwatch.StartNew();
        var reader = new Reader(ck, precision == WeightPrecision.BF16 ? ScalarType.BFloat16 : ScalarType.Float32);
        int total = ck.TensorNames.Count;
        var layers = new List<DecoderLayerWeights>(cfg.NumLayers);
        using (torch.no_grad())
        {
            try
            {
                int H = cfg.HiddenSize;
                var embed = reader.Weight("model.embed_tokens.weight", cfg.VocabSize, H);
                for (int l = 0; l < cfg.NumLayers; l++)
                {
                    layers.Add(LoadLayer(cfg, reader, l));
                    progress?.Invoke(reader.Count, total);
                }
                var norm = reader.Fp32("model.norm.weight", H);
                Linear lmHead;
                if (ck.Contains("lm_head.weight")) lmHead = new Linear(reader.Weight("lm_head.weight", cfg.VocabSize, H));
                else if (cfg.TieWordEmbeddings) lmHead = new Linear(embed.alias());
                else lmHead = new Linear(reader.Weight("lm_head.weight", cfg.VocabSize, H)); // throws: names the missing tensor
                progress?.Invoke(total, total);
                return new ModelWeights
                {
                    Config = cfg,
                    Embedding = embed.DetachFromDisposeScope(),
                    Layers = layers,
                    FinalNorm = norm.DetachFromDisposeScope(),
                    LmHead = lmHead,
                    TiedLmHead = !ck.Contains("lm_head.weight"),
                    BytesRead = reader.Bytes,
                    LoadTime = sw.Elapsed,
                };
            }
            catch
            {
                foreach (var l in layers) l.Dispose();
                throw;
            }
        }
    }

    private static DecoderLayerWeights LoadLayer(ModelConfig cfg, Reader r, int l)
    {
        string p = $"model.layers.{l}.";
        int H = cfg.HiddenSize, q = cfg.QWidth, kv = cfg.KvWidth;
        var wq = r.Weight(p + "self_attn.q_proj.weight", q, H);
        var wk = r.Weight(p + "self_attn.k_proj.weight", kv, H);
        var wv = r.Weight(p + "self_attn.v_proj.weight", kv, H);
        var qkv = torch.cat([wq, wk, wv], 0);
        wq.Dispose(); wk.Dispose(); wv.Dispose();
        Tensor? qkvBias = null;
        if (cfg.QkvBias)
        {
            using var bq = r.Fp32(p + "self_attn.q_proj.bias", q);
            using var bk = r.Fp32(p + "self_attn.k_proj.bias", kv);
            using var bv = r.Fp32(p + "self_attn.v_proj.bias", kv);
            qkvBias = torch.cat([bq, bk, bv], 0);
        }
        var o = new Linear(r.Weight(p + "self_attn.o_proj.weight", H, q),
            cfg.OutputBias ? r.Fp32(p + "self_attn.o_proj.bias", H) : null);
        Tensor? qn = null, kn = null;
        if (cfg.QkNorm == QkNormKind.PerHead)
        {
            qn = r.Fp32(p + "self_attn.q_norm.weight", cfg.HeadDim);
            kn = r.Fp32(p + "self_attn.k_norm.weight", cfg.HeadDim);
        }
        else if (cfg.QkNorm == QkNormKind.FullWidth)
        {
            qn = r.Fp32(p + "self_attn.q_norm.weight", q);
            kn = r.Fp32(p + "self_attn.k_norm.weight", kv);
        }

        Tensor? router = null, sharedGate = null;
        ExpertFfn[] experts = [];
        ExpertFfn? shared = null, dense = null;
        if (cfg.IsSparseLayer(l))
        {
            string moe = cfg.Architecture == ModelArchitecture.Mixtral && r.Has(p + "block_sparse_moe.gate.weight")
                ? p + "block_sparse_moe."
                : p + "mlp.";
            int E = cfg.NumExperts, I = cfg.ExpertIntermediateSize;
            router = r.Fp32(moe + "gate.weight", E, H);
            experts = new ExpertFfn[E];
            if (r.Has(moe + "experts.gate_up_proj"))
            {
                // transformers v5 fused layout: one [E, 2I, H] and one [E, H, I] tensor per layer.
                using var gu = r.Weight(moe + "experts.gate_up_proj", E, 2 * I, H);
                using var down = r.Weight(moe + "experts.down_proj", E, H, I);
                for (int e = 0; e < E; e++)
                    experts[e] = new ExpertFfn(gu[e].contiguous(), down[e].contiguous());
            }
            else
            {
                bool mixtralNames = cfg.Architecture == ModelArchitecture.Mixtral;
                for (int e = 0; e < E; e++)
                {
                    string ep = $"{moe}experts.{e}.";
                    experts[e] = mixtralNames
                        ? LoadFfn(r, ep + "w1.weight", ep + "w3.weight", ep + "w2.weight", I, H)
                        : LoadFfn(r, ep + "gate_proj.weight", ep + "up_proj.weight", ep + "down_proj.weight", I, H);
                }
            }
            if (cfg.SharedExpertIntermediateSize > 0)
            {
                string sp = p + "mlp.shared_expert.";
                shared = LoadFfn(r, sp + "gate_proj.weight", sp + "up_proj.weight", sp + "down_proj.weight",
                    cfg.SharedExpertIntermediateSize, H);
                sharedGate = r.Fp32(p + "mlp.shared_expert_gate.weight", 1, H);
            }
        }
        else
        {
            dense = LoadFfn(r, p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight", p + "mlp.down_proj.weight",
                cfg.DenseIntermediateSize, H);
        }

        return new DecoderLayerWeights
        {
            InputNorm = r.Fp32(p + "input_layernorm.weight", H).DetachFromDisposeScope(),
            PostAttentionNorm = r.Fp32(p + "post_attention_layernorm.weight", H).DetachFromDisposeScope(),
            Qkv = new Linear(qkv, qkvBias),
            Output = o,
            QNorm = qn?.DetachFromDisposeScope(),
            KNorm = kn?.DetachFromDisposeScope(),
            Router = router?.DetachFromDisposeScope(),
            Experts = experts,
            SharedExpert = shared,
            SharedExpertGate = sharedGate?.DetachFromDisposeScope(),
            DenseMlp = dense,
        };
    }

    private static ExpertFfn LoadFfn(Reader r, string gate, string up, string down, int width, int hidden)
    {
        using var g = r.Weight(gate, width, hidden);
        using var u = r.Weight(up, width, hidden);
        return new ExpertFfn(torch.cat([g, u], 0), r.Weight(down, hidden, width));
    }

    /// <summary>Reads tensors with shape checks into the weight precision (matrices) or fp32 (vectors, router).</summary>
    private sealed unsafe class Reader(Checkpoint ck, ScalarType weightType)
    {
        public int Count { get; private set; }
        public long Bytes { get; private set; }

        public bool Has(string name) => ck.Contains(name);

        public Tensor Weight(string name, params long[] shape) => Read(name, weightType, shape);

        public Tensor Fp32(string name, params long[] shape) => Read(name, ScalarType.Float32, shape);

        private Tensor Read(string name, ScalarType target, long[] shape)
        {
            var e = ck.Require(name, shape);
            var raw = TorchInterop.FromBytes(ck.GetPointer(e), e.ByteLength, e.DType.ToScalarType(), e.Shape);
            Count++;
            Bytes += e.ByteLength;
            if (raw.dtype == target) return raw;
            var converted = raw.to(target);
            raw.Dispose();
            return converted;
        }
    }

    public long ParameterCount()
    {
        long n = Embedding.numel() + FinalNorm.numel();
        if (!TiedLmHead) n += LmHead.Weight.numel();
        foreach (var l in Layers)
        {
            n += l.InputNorm.numel() + l.PostAttentionNorm.numel() + l.Qkv.Weight.numel() + l.Output.Weight.numel();
            n += l.Router?.numel() ?? 0;
            n += l.Experts.Sum(e => e.GateUp.Weight.numel() + e.Down.Weight.numel());
            n += l.DenseMlp is { } d ? d.GateUp.Weight.numel() + d.Down.Weight.numel() : 0;
            n += l.SharedExpert is { } s ? s.GateUp.Weight.numel() + s.Down.Weight.numel() : 0;
        }
        return n;
    }

    public void Dispose()
    {
        foreach (var l in Layers) l.Dispose();
        LmHead.Dispose();
        Embedding.Dispose();
        FinalNorm.Dispose();
    }
}
