using MoeServer.Kernels.Config;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace MoeServer.Tools.Training;

/// <summary>
/// A trainable layer-wise MoE in the <c>mixtral</c> format (autograd through TorchSharp modules; the serving runtime
/// has its own inference-only kernels). Pre-norm decoder: RMSNorm, GQA attention with HF rotate-half RoPE, then a
/// top-k softmax router (renormalised, as Mixtral) over SwiGLU experts. Forward returns the logits and the
/// Switch-Transformer load-balancing loss averaged over layers. With one expert this is a dense Llama-style model.
/// </summary>
public sealed class MixtralTrainingModel : nn.Module<Tensor, (Tensor Logits, Tensor BalanceLoss)>
{
    private readonly ModelConfig _cfg;
    private readonly Embedding embed_tokens;
    private readonly ModuleList<MoeBlock> layers;
    private readonly Parameter norm;
    private readonly Linear? lm_head;
    private readonly Tensor _invFreq;

    public MixtralTrainingModel(ModelConfig cfg, long seed) : base("mixtral")
    {
        if (cfg.Architecture != ModelArchitecture.Mixtral)
            throw new ArgumentException($"the training model is mixtral-format; got {cfg.Architecture.ToModelType()}", nameof(cfg));
        _cfg = cfg;
        torch.manual_seed(seed);
        embed_tokens = nn.Embedding(cfg.VocabSize, cfg.HiddenSize);
        layers = nn.ModuleList(Enumerable.Range(0, cfg.NumLayers).Select(_ => new MoeBlock(cfg)).ToArray());
        norm = nn.Parameter(torch.ones(cfg.HiddenSize));
        if (!cfg.TieWordEmbeddings) lm_head = nn.Linear(cfg.HiddenSize, cfg.VocabSize, hasBias: false);
        var half = torch.arange(0, cfg.HeadDim, 2, ScalarType.Float64) / cfg.HeadDim;
        _invFreq = torch.pow(cfg.RopeTheta, -half).to(ScalarType.Float32);
        RegisterComponents(); // before the init below: named_parameters() only sees registered modules
        // GPT-style init: N(0, 0.02) everywhere, output projections scaled down by depth.
        using (torch.no_grad())
        {
            foreach (var (name, p) in named_parameters())
            {
                if (p.dim() < 2) continue;
                double std = name.EndsWith("o_proj.weight", StringComparison.Ordinal) || name.EndsWith("w2", StringComparison.Ordinal)
                    ? 0.02 / Math.Sqrt(2 * cfg.NumLayers)
                    : 0.02;
                p.normal_(0, std);
            }
        }
    }

    public ModelConfig Config => _cfg;

    /// <param name="tokens">[B, T] token ids.</param>
    public override (Tensor Logits, Tensor BalanceLoss) forward(Tensor tokens)
    {
        using var scope = torch.NewDisposeScope();
        long T = tokens.shape[1];
        var positions = torch.arange(T, ScalarType.Float32, device: tokens.device);
        var freqs = torch.outer(positions, _invFreq.to(tokens.device));
        var emb = torch.cat([freqs, freqs], -1);
        var (cos, sin) = (emb.cos(), emb.sin());
        var x = embed_tokens.forward(tokens);
        var balance = torch.zeros(1, device: tokens.device);
        foreach (var layer in layers)
        {
            var (y, aux) = layer.Forward(x, cos, sin);
            x = y;
            balance = balance + aux;
        }
        x = MoeBlock.RmsNorm(x, norm, _cfg.RmsNormEps);
        var logits = lm_head is null ? F.linear(x, embed_tokens.weight!) : lm_head.forward(x);
        using Scalar numLayers = ((double)_cfg.NumLayers).ToScalar();
        return (scope.MoveToOuter(logits), scope.MoveToOuter(balance / numLayers));
    }

    /// <summary>The parameters under their HF <c>mixtral</c> checkpoint names (experts split per expert).</summary>
    public IEnumerable<(string Name, Tensor Value)> HfTensors()
    {
        yield return ("model.embed_tokens.weight", embed_tokens.weight!);
        for (int l = 0; l < layers.Count; l++)
            foreach (var (n, t) in layers[l].HfTensors($"model.layers.{l}.")) yield return (n, t);
        yield return ("model.norm.weight", norm);
        if (lm_head is not null) yield return ("lm_head.weight", lm_head.weight!);
    }

    /// <summary>One decoder layer: attention + top-k MoE.</summary>
    private sealed class MoeBlock : nn.Module
    {
        private readonly ModelConfig _cfg;
        private readonly Parameter input_layernorm, post_attention_layernorm;
        private readonly Linear q_proj, k_proj, v_proj, o_proj, gate;
        // Experts stacked: w1 (gate) [E, I, H], w3 (up) [E, I, H], w2 (down) [E, H, I].
        private readonly Parameter w1, w2, w3;

        public MoeBlock(ModelConfig cfg) : base("layer")
        {
            _cfg = cfg;
            int H = cfg.HiddenSize, E = cfg.NumExperts, I = cfg.ExpertIntermediateSize;
            input_layernorm = nn.Parameter(torch.ones(H));
            post_attention_layernorm = nn.Parameter(torch.ones(H));
            q_proj = nn.Linear(H, cfg.QWidth, hasBias: false);
            k_proj = nn.Linear(H, cfg.KvWidth, hasBias: false);
            v_proj = nn.Linear(H, cfg.KvWidth, hasBias: false);
            o_proj = nn.Linear(cfg.QWidth, H, hasBias: false);
            gate = nn.Linear(H, E, hasBias: false);
            w1 = nn.Parameter(torch.empty(E, I, H));
            w3 = nn.Parameter(torch.empty(E, I, H));
            w2 = nn.Parameter(torch.empty(E, H, I));
            RegisterComponents();
        }

        public static Tensor RmsNorm(Tensor x, Tensor weight, double eps)
        {
            // A `using` Scalar stays alive through the native call (a temporary one may be finalized during it).
            using Scalar e = eps.ToScalar();
            var variance = x.square().mean([-1], keepdim: true);
            return x * torch.rsqrt(variance + e) * weight;
        }

        private static Tensor RotateHalf(Tensor x)
        {
            long half = x.shape[^1] / 2;
            return torch.cat([-x.narrow(-1, half, half), x.narrow(-1, 0, half)], -1);
        }

        public (Tensor Y, Tensor Balance) Forward(Tensor x, Tensor cos, Tensor sin)
        {
            long B = x.shape[0], T = x.shape[1];
            int nH = _cfg.NumHeads, nKV = _cfg.NumKvHeads, hd = _cfg.HeadDim, H = _cfg.HiddenSize;
            var h = RmsNorm(x, input_layernorm, _cfg.RmsNormEps);
            var q = q_proj.forward(h).view(B, T, nH, hd).transpose(1, 2);
            var k = k_proj.forward(h).view(B, T, nKV, hd).transpose(1, 2);
            var v = v_proj.forward(h).view(B, T, nKV, hd).transpose(1, 2);
            q = q * cos + RotateHalf(q) * sin;
            k = k * cos + RotateHalf(k) * sin;
            if (nKV != nH)
            {
                k = k.repeat_interleave(nH / nKV, dim: 1);
                v = v.repeat_interleave(nH / nKV, dim: 1);
            }
            var attn = F.scaled_dot_product_attention(q, k, v, is_casual: true);
            x = x + o_proj.forward(attn.transpose(1, 2).reshape(B, T, nH * hd));

            var m = RmsNorm(x, post_attention_layernorm, _cfg.RmsNormEps).reshape(B * T, H);
            var probs = F.softmax(gate.forward(m), -1);
            int k_ = _cfg.NumExpertsPerToken, E = _cfg.NumExperts;
            var (topW, topE) = probs.topk(k_, dim: -1);
            topW = topW / topW.sum(-1, keepdim: true);
            var y = torch.zeros_like(m);
            for (int e = 0; e < E; e++)
            {
                var hit = topE.eq(e);                                   // [N, k]
                var rows = hit.any(-1).nonzero().squeeze(-1);           // tokens routed to e
                if (rows.shape[0] == 0) continue;
                var w = (topW * hit.to(topW.dtype)).sum(-1).index_select(0, rows).unsqueeze(-1);
                var xe = m.index_select(0, rows);
                var a = F.silu(F.linear(xe, w1[e])) * F.linear(xe, w3[e]);
                using var one = 1.0.ToScalar();
                y = y.index_add(0, rows, F.linear(a, w2[e]) * w, one);
            }
            // Switch load balancing: E * sum_e (fraction of routed slots on e) * (mean router probability of e).
            var counts = F.one_hot(topE.reshape(-1), E).to(probs.dtype).mean([0]);
            using Scalar experts = ((double)E).ToScalar();
            var balance = (counts * probs.mean([0])).sum() * experts;
            return (x + y.view(B, T, H), balance);
        }

        public IEnumerable<(string, Tensor)> HfTensors(string p)
        {
            yield return (p + "input_layernorm.weight", input_layernorm);
            yield return (p + "self_attn.q_proj.weight", q_proj.weight!);
            yield return (p + "self_attn.k_proj.weight", k_proj.weight!);
            yield return (p + "self_attn.v_proj.weight", v_proj.weight!);
            yield return (p + "self_attn.o_proj.weight", o_proj.weight!);
            yield return (p + "post_attention_layernorm.weight", post_attention_layernorm);
            yield return (p + "block_sparse_moe.gate.weight", gate.weight!);
            for (int e = 0; e < _cfg.NumExperts; e++)
            {
                string ep = $"{p}block_sparse_moe.experts.{e}.";
                yield return (ep + "w1.weight", w1[e]);
                yield return (ep + "w2.weight", w2[e]);
                yield return (ep + "w3.weight", w3[e]);
            }
        }
    }
}
