using MoeServer.Kernels.Config;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace MoeServer.Tools.Training;

/// <summary>
/// A trainable MoE decoder (autograd through TorchSharp modules; the serving runtime has its own inference-only
/// kernels) in one of two formats:
/// <list type="bullet">
/// <item><c>mixtral</c>: every layer has its own top-k softmax gate (renormalised) over SwiGLU experts; with one
/// expert it is a dense Llama-style model;</item>
/// <item><c>readme_moe</c>: a small causal router transformer over the token ids picks the experts of every layer at
/// once (ROUTER_DECOUPLED_SPEC.md), plus an ungated permanent expert per layer.</item>
/// </list>
/// Forward returns the logits and the Switch-Transformer load-balancing loss (averaged over the gates).
/// </summary>
public sealed class MoeTrainingModel : nn.Module<Tensor, (Tensor Logits, Tensor BalanceLoss)>
{
    private readonly ModelConfig _cfg;
    private readonly Embedding embed_tokens;
    private readonly ModuleList<DecoderBlock> layers;
    private readonly Parameter norm;
    private readonly Linear? lm_head;
    private readonly Router? router;
    private readonly Tensor _invFreq;

    public MoeTrainingModel(ModelConfig cfg, long seed) : base("moe")
    {
        if (cfg.Architecture is not (ModelArchitecture.Mixtral or ModelArchitecture.RouterDecoupled))
            throw new ArgumentException($"training supports mixtral and readme_moe; got {cfg.Architecture.ToModelType()}", nameof(cfg));
        _cfg = cfg;
        torch.manual_seed(seed);
        embed_tokens = nn.Embedding(cfg.VocabSize, cfg.HiddenSize);
        layers = nn.ModuleList(Enumerable.Range(0, cfg.NumLayers).Select(_ => new DecoderBlock(cfg)).ToArray());
        norm = nn.Parameter(torch.ones(cfg.HiddenSize));
        if (!cfg.TieWordEmbeddings) lm_head = nn.Linear(cfg.HiddenSize, cfg.VocabSize, hasBias: false);
        if (cfg.Router is { } rc) router = new Router(cfg, rc);
        _invFreq = InvFreq(cfg.HeadDim, cfg.RopeTheta);
        RegisterComponents(); // before the init below: named_parameters() only sees registered modules
        // GPT-style init: N(0, 0.02) everywhere, output projections scaled down by depth.
        using (torch.no_grad())
        {
            foreach (var (name, p) in named_parameters())
            {
                if (p.dim() < 2) continue;
                double std = name.EndsWith("o_proj.weight", StringComparison.Ordinal) || name.EndsWith("w2", StringComparison.Ordinal)
                             || name.EndsWith("down_proj.weight", StringComparison.Ordinal)
                    ? 0.02 / Math.Sqrt(2 * cfg.NumLayers)
                    : 0.02;
                p.normal_(0, std);
            }
        }
    }

    public ModelConfig Config => _cfg;

    private static Tensor InvFreq(int headDim, double theta)
    {
        using var half = torch.arange(0, headDim, 2, ScalarType.Float64) / headDim;
        return torch.pow(theta, -half).to(ScalarType.Float32);
    }

    /// <summary>HF rotate-half RoPE tables [T, hd] for positions 0..T-1.</summary>
    private static (Tensor Cos, Tensor Sin) Rope(Tensor invFreq, long T, Device device)
    {
        var positions = torch.arange(T, ScalarType.Float32, device: device);
        var freqs = torch.outer(positions, invFreq.to(device));
        var emb = torch.cat([freqs, freqs], -1);
        return (emb.cos(), emb.sin());
    }

    /// <param name="tokens">[B, T] token ids.</param>
    public override (Tensor Logits, Tensor BalanceLoss) forward(Tensor tokens)
    {
        using var scope = torch.NewDisposeScope();
        long T = tokens.shape[1];
        var (cos, sin) = Rope(_invFreq, T, tokens.device);
        Routing? shared = router?.Route(tokens);
        var x = embed_tokens.forward(tokens);
        var balance = shared?.Balance ?? torch.zeros(1, device: tokens.device);
        foreach (var layer in layers)
        {
            var (y, aux) = layer.Forward(x, cos, sin, shared);
            x = y;
            if (aux is not null) balance = balance + aux;
        }
        x = RmsNorm(x, norm, _cfg.RmsNormEps);
        var logits = lm_head is null ? F.linear(x, embed_tokens.weight!) : lm_head.forward(x);
        using Scalar gates = (double)(router is null ? _cfg.NumLayers : 1);
        return (scope.MoveToOuter(logits), scope.MoveToOuter(balance / gates));
    }

    /// <summary>The parameters under their HF checkpoint names (experts split per expert).</summary>
    public IEnumerable<(string Name, Tensor Value)> HfTensors()
    {
        yield return ("model.embed_tokens.weight", embed_tokens.weight!);
        for (int l = 0; l < layers.Count; l++)
            foreach (var t in layers[l].HfTensors($"model.layers.{l}.")) yield return t;
        yield return ("model.norm.weight", norm);
        if (lm_head is not null) yield return ("lm_head.weight", lm_head.weight!);
        if (router is not null)
            foreach (var t in router.HfTensors()) yield return t;
    }

    internal static Tensor RmsNorm(Tensor x, Tensor weight, double eps)
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

    /// <summary>Each token's chosen experts and their weights ([N, k]) and the gate's balance loss.</summary>
    private sealed record Routing(Tensor Experts, Tensor Weights, Tensor Balance);

    /// <summary>Top-k of router probabilities [N, E] and the Switch load-balancing loss:
    /// E * sum_e (fraction of routed slots on e) * (mean probability of e).</summary>
    private static Routing TopK(Tensor probs, int k, bool renormalise)
    {
        int E = (int)probs.shape[1];
        var (w, e) = probs.topk(k, dim: -1);
        if (renormalise) w = w / w.sum(-1, keepdim: true);
        var counts = F.one_hot(e.reshape(-1), E).to(probs.dtype).mean([0]);
        using Scalar experts = (double)E;
        return new Routing(e, w, (counts * probs.mean([0])).sum() * experts);
    }

    /// <summary>Causal GQA self-attention with RoPE (HF Llama layout).</summary>
    private sealed class Attention : nn.Module
    {
        private readonly int _heads, _kvHeads, _headDim;
        private readonly Linear q_proj, k_proj, v_proj, o_proj;

        public Attention(int hidden, int heads, int kvHeads, int headDim) : base("attn")
        {
            (_heads, _kvHeads, _headDim) = (heads, kvHeads, headDim);
            q_proj = nn.Linear(hidden, heads * headDim, hasBias: false);
            k_proj = nn.Linear(hidden, kvHeads * headDim, hasBias: false);
            v_proj = nn.Linear(hidden, kvHeads * headDim, hasBias: false);
            o_proj = nn.Linear(heads * headDim, hidden, hasBias: false);
            RegisterComponents();
        }

        public Tensor Forward(Tensor h, Tensor cos, Tensor sin)
        {
            long B = h.shape[0], T = h.shape[1];
            var q = q_proj.forward(h).view(B, T, _heads, _headDim).transpose(1, 2);
            var k = k_proj.forward(h).view(B, T, _kvHeads, _headDim).transpose(1, 2);
            var v = v_proj.forward(h).view(B, T, _kvHeads, _headDim).transpose(1, 2);
            q = q * cos + RotateHalf(q) * sin;
            k = k * cos + RotateHalf(k) * sin;
            if (_kvHeads != _heads)
            {
                k = k.repeat_interleave(_heads / _kvHeads, dim: 1);
                v = v.repeat_interleave(_heads / _kvHeads, dim: 1);
            }
            var attn = F.scaled_dot_product_attention(q, k, v, is_casual: true);
            return o_proj.forward(attn.transpose(1, 2).reshape(B, T, _heads * _headDim));
        }

        public IEnumerable<(string, Tensor)> HfTensors(string p)
        {
            yield return (p + "self_attn.q_proj.weight", q_proj.weight!);
            yield return (p + "self_attn.k_proj.weight", k_proj.weight!);
            yield return (p + "self_attn.v_proj.weight", v_proj.weight!);
            yield return (p + "self_attn.o_proj.weight", o_proj.weight!);
        }
    }

    /// <summary>A dense SwiGLU MLP: down(silu(gate x) * up x) (the router's blocks, the permanent expert).</summary>
    private sealed class SwiGlu : nn.Module
    {
        private readonly Linear gate_proj, up_proj, down_proj;

        public SwiGlu(int hidden, int width) : base("mlp")
        {
            gate_proj = nn.Linear(hidden, width, hasBias: false);
            up_proj = nn.Linear(hidden, width, hasBias: false);
            down_proj = nn.Linear(width, hidden, hasBias: false);
            RegisterComponents();
        }

        public Tensor Forward(Tensor x) => down_proj.forward(F.silu(gate_proj.forward(x)) * up_proj.forward(x));

        public IEnumerable<(string, Tensor)> HfTensors(string p)
        {
            yield return (p + "gate_proj.weight", gate_proj.weight!);
            yield return (p + "up_proj.weight", up_proj.weight!);
            yield return (p + "down_proj.weight", down_proj.weight!);
        }
    }

    /// <summary>The decoupled router: embedding, Llama blocks, norm, head over the experts.</summary>
    private sealed class Router : nn.Module
    {
        private readonly ModelConfig _cfg;
        private readonly Embedding embed_tokens;
        private readonly ModuleList<Attention> attn;
        private readonly ModuleList<SwiGlu> mlp;
        private readonly ParameterList input_norms, post_norms;
        private readonly Parameter norm;
        private readonly Linear head;
        private readonly Tensor _invFreq;

        public Router(ModelConfig cfg, RouterConfig rc) : base("router")
        {
            _cfg = cfg;
            embed_tokens = nn.Embedding(cfg.VocabSize, rc.HiddenSize);
            attn = nn.ModuleList(Enumerable.Range(0, rc.NumLayers).Select(_ => new Attention(rc.HiddenSize, rc.NumHeads, rc.NumKvHeads, rc.HeadDim)).ToArray());
            mlp = nn.ModuleList(Enumerable.Range(0, rc.NumLayers).Select(_ => new SwiGlu(rc.HiddenSize, rc.IntermediateSize)).ToArray());
            input_norms = nn.ParameterList(Enumerable.Range(0, rc.NumLayers).Select(_ => nn.Parameter(torch.ones(rc.HiddenSize))).ToArray());
            post_norms = nn.ParameterList(Enumerable.Range(0, rc.NumLayers).Select(_ => nn.Parameter(torch.ones(rc.HiddenSize))).ToArray());
            norm = nn.Parameter(torch.ones(rc.HiddenSize));
            head = nn.Linear(rc.HiddenSize, cfg.NumExperts, hasBias: false);
            _invFreq = InvFreq(rc.HeadDim, cfg.RopeTheta);
            RegisterComponents();
        }

        public Routing Route(Tensor tokens)
        {
            long B = tokens.shape[0], T = tokens.shape[1];
            var (cos, sin) = Rope(_invFreq, T, tokens.device);
            var r = embed_tokens.forward(tokens);
            for (int i = 0; i < attn.Count; i++)
            {
                r = r + attn[i].Forward(RmsNorm(r, input_norms[i], _cfg.RmsNormEps), cos, sin);
                r = r + mlp[i].Forward(RmsNorm(r, post_norms[i], _cfg.RmsNormEps));
            }
            var probs = F.softmax(head.forward(RmsNorm(r, norm, _cfg.RmsNormEps)), -1).reshape(B * T, _cfg.NumExperts);
            return TopK(probs, _cfg.NumExpertsPerToken, _cfg.NormTopKProb);
        }

        public IEnumerable<(string, Tensor)> HfTensors()
        {
            yield return ("router.embed_tokens.weight", embed_tokens.weight!);
            for (int i = 0; i < attn.Count; i++)
            {
                string p = $"router.layers.{i}.";
                yield return (p + "input_layernorm.weight", input_norms[i]);
                foreach (var t in attn[i].HfTensors(p)) yield return t;
                yield return (p + "post_attention_layernorm.weight", post_norms[i]);
                foreach (var t in mlp[i].HfTensors(p + "mlp.")) yield return t;
            }
            yield return ("router.norm.weight", norm);
            yield return ("router.head.weight", head.weight!);
        }
    }

    /// <summary>One decoder layer: attention, then the routed experts (own gate, or the router's choice) and the
    /// permanent expert where there is one.</summary>
    private sealed class DecoderBlock : nn.Module
    {
        private readonly ModelConfig _cfg;
        private readonly Parameter input_layernorm, post_attention_layernorm;
        private readonly Attention self_attn;
        private readonly Linear? gate;
        // Experts stacked: w1 (gate) [E, I, H], w3 (up) [E, I, H], w2 (down) [E, H, I].
        private readonly Parameter w1, w2, w3;
        private readonly SwiGlu? shared_expert;

        public DecoderBlock(ModelConfig cfg) : base("layer")
        {
            _cfg = cfg;
            int H = cfg.HiddenSize, E = cfg.NumExperts, I = cfg.ExpertIntermediateSize;
            input_layernorm = nn.Parameter(torch.ones(H));
            post_attention_layernorm = nn.Parameter(torch.ones(H));
            self_attn = new Attention(H, cfg.NumHeads, cfg.NumKvHeads, cfg.HeadDim);
            if (cfg.Router is null) gate = nn.Linear(H, E, hasBias: false);
            w1 = nn.Parameter(torch.empty(E, I, H));
            w3 = nn.Parameter(torch.empty(E, I, H));
            w2 = nn.Parameter(torch.empty(E, H, I));
            if (cfg.SharedExpertIntermediateSize > 0) shared_expert = new SwiGlu(H, cfg.SharedExpertIntermediateSize);
            RegisterComponents();
        }

        public (Tensor Y, Tensor? Balance) Forward(Tensor x, Tensor cos, Tensor sin, Routing? shared)
        {
            long B = x.shape[0], T = x.shape[1];
            int H = _cfg.HiddenSize;
            x = x + self_attn.Forward(RmsNorm(x, input_layernorm, _cfg.RmsNormEps), cos, sin);
            var m = RmsNorm(x, post_attention_layernorm, _cfg.RmsNormEps).reshape(B * T, H);
            var routing = shared ?? TopK(F.softmax(gate!.forward(m), -1), _cfg.NumExpertsPerToken, renormalise: true);
            var y = torch.zeros_like(m);
            using Scalar one = 1.0;
            for (int e = 0; e < _cfg.NumExperts; e++)
            {
                var hit = routing.Experts.eq(e);                        // [N, k]
                var rows = hit.any(-1).nonzero().squeeze(-1);           // tokens routed to e
                if (rows.shape[0] == 0) continue;
                var w = (routing.Weights * hit.to(routing.Weights.dtype)).sum(-1).index_select(0, rows).unsqueeze(-1);
                var xe = m.index_select(0, rows);
                var a = F.silu(F.linear(xe, w1[e])) * F.linear(xe, w3[e]);
                y = y.index_add(0, rows, F.linear(a, w2[e]) * w, one);
            }
            if (shared_expert is not null) y = y + shared_expert.Forward(m);
            return (x + y.view(B, T, H), shared is null ? routing.Balance : null);
        }

        public IEnumerable<(string, Tensor)> HfTensors(string p)
        {
            yield return (p + "input_layernorm.weight", input_layernorm);
            foreach (var t in self_attn.HfTensors(p)) yield return t;
            yield return (p + "post_attention_layernorm.weight", post_attention_layernorm);
            if (_cfg.Router is null)
            {
                // mixtral names
                yield return (p + "block_sparse_moe.gate.weight", gate!.weight!);
                for (int e = 0; e < _cfg.NumExperts; e++)
                {
                    string ep = $"{p}block_sparse_moe.experts.{e}.";
                    yield return (ep + "w1.weight", w1[e]);
                    yield return (ep + "w2.weight", w2[e]);
                    yield return (ep + "w3.weight", w3[e]);
                }
                yield break;
            }
            for (int e = 0; e < _cfg.NumExperts; e++)
            {
                string ep = $"{p}mlp.experts.{e}.";
                yield return (ep + "gate_proj.weight", w1[e]);
                yield return (ep + "up_proj.weight", w3[e]);
                yield return (ep + "down_proj.weight", w2[e]);
            }
            if (shared_expert is not null)
                foreach (var t in shared_expert.HfTensors(p + "mlp.shared_expert.")) yield return t;
        }
    }
}
