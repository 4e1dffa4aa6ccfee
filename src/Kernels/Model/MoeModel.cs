using MoeServer.Kernels.Config;
using TorchSharp;
using static TorchSharp.torch;

namespace MoeServer.Kernels.Model;

/// <summary>Which rows get logits from a forward.</summary>
public enum LogitRows
{
    /// <summary>Only each segment's last token (next-token prediction; the serving path).</summary>
    LastOfEachSegment,
    /// <summary>Every token (perplexity, tests).</summary>
    All,
}

/// <summary>
/// A Mixtral / Qwen2-MoE / Qwen3-MoE / OLMoE decoder on TorchSharp, exposed as the pieces the engine distributes
/// (attention step, gate, one expert over a row block, combine, LM head). <see cref="Forward"/> is built from the
/// same pieces. Activations are fp32 [tokens, hidden]; a batch mixes sequences at different positions.
/// </summary>
public sealed partial class MoeModel : IDisposable
{
    private readonly RotaryEmbedding _rope;
    private readonly RotaryEmbedding? _routerRope;
    private readonly Scalar _rmsEps;

    // index_add_'s alpha: a literal 1.0 would become a temporary Scalar the GC may finalize on its own thread while
    // libtorch still reads it (the JIT drops the reference once the handle is passed), corrupting c10::Scalar.
    private static readonly Scalar One = 1.0.ToScalar();

    public ModelConfig Config { get; }
    public ModelWeights Weights { get; }
    /// <summary>Where the weights, caches and activations live. The native kernels serve CPU nodes; on any other
    /// device every step goes through torch ops.</summary>
    public Device Device => Weights.Embedding.device;
    private bool IsCpu => Weights.Embedding.device_type == DeviceType.CPU;

    private MoeModel(ModelWeights weights)
    {
        Weights = weights;
        Config = weights.Config;
        _rope = new RotaryEmbedding(Config.HeadDim, Config.RopeTheta, Math.Min(Config.MaxPositionEmbeddings, 8192));
        _rmsEps = Config.RmsNormEps.ToScalar();
        if (Config.Router is { } rc)
            _routerRope = new RotaryEmbedding(rc.HeadDim, Config.RopeTheta, Math.Min(Config.MaxPositionEmbeddings, 8192));
    }

    /// <summary>Loads a model directory; <see cref="WeightSet.Backbone"/> leaves the routed experts to expert nodes,
    /// so only the pieces that do not run experts (attention, gate, combine, LM head) work locally.</summary>
    public static MoeModel Load(string dir, WeightPrecision precision = WeightPrecision.BF16,
        ModelWeights.LoadProgress? progress = null, WeightSet set = WeightSet.All, Device? device = null)
    {
        TorchRuntime.Initialize();
        var weights = ModelWeights.Load(dir, precision, progress, set);
        return new MoeModel(device is null ? weights : weights.To(device));
    }

    public static MoeModel FromWeights(ModelWeights weights)
    {
        TorchRuntime.Initialize();
        return new MoeModel(weights);
    }

    /// <summary>Sees every layer's routing decision of the local MLP path (statistics, benchmarks).</summary>
    public Action<ExpertRouting>? RoutingObserver { get; set; }

    /// <summary>A fresh, empty sequence state.</summary>
    public KvCache NewSequence(int initialCapacity = 64)
    {
        var device = IsCpu ? null : Device;
        var router = Config.Router is { } rc ? new KvCache(rc.NumLayers, rc.NumKvHeads, rc.HeadDim, initialCapacity, device) : null;
        return new KvCache(Config.NumLayers, Config.NumKvHeads, Config.HeadDim, initialCapacity, device, router);
    }

    // ---------------------------------------------------------------- monolithic forward

    /// <summary>
    /// Runs the whole batch through every layer, appends its keys/values to each sequence's cache, and returns
    /// fp32 logits for the selected rows ([rows, vocab]).
    /// </summary>
    public Tensor Forward(BatchLayout batch, LogitRows rows = LogitRows.LastOfEachSegment)
    {
        using var grad = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        TorchRuntime.UseThreadsFor(batch.TotalTokens);
        var x = Embed(batch);
        for (int l = 0; l < Config.NumLayers; l++)
        {
            x = AttentionBlock(l, x, batch);
            x = MlpBlock(l, x, batch);
        }
        var logits = Logits(x, rows == LogitRows.All ? null : batch.LastRows());
        Commit(batch);
        return scope.MoveToOuter(logits);
    }

    /// <summary>Convenience: one sequence, returns logits for every token as a managed array [T][V].</summary>
    public float[][] ForwardSequence(KvCache seq, IReadOnlyList<int> tokens, RoutingOverride? routing = null)
    {
        var batch = new BatchLayout([new BatchSegment(seq, tokens, routing)]);
        using var logits = Forward(batch, LogitRows.All);
        var flat = TorchInterop.ToFloatArray(logits);
        int v = Config.VocabSize;
        return Enumerable.Range(0, tokens.Count).Select(i => flat.AsSpan(i * v, v).ToArray()).ToArray();
    }

    // ---------------------------------------------------------------- pieces

    /// <summary>Token embeddings of the batch rows, fp32 [T, H]. For <c>readme_moe</c> the decoupled router runs here
    /// first (its cache advances with the batch), so every layer's experts are known before the backbone starts.</summary>
    public Tensor Embed(BatchLayout batch)
    {
        using var ids = ValidatedTokenIds(batch);
        if (Weights.Router is not null) batch.RouterProbabilities = RouterProbabilities(batch, ids);
        using var e = Weights.Embedding.index_select(0, ids);
        return e.to(ScalarType.Float32);
    }

    private Tensor ValidatedTokenIds(BatchLayout batch)
    {
        foreach (int id in batch.TokenIds)
            if ((uint)id >= (uint)Config.VocabSize)
                throw new ArgumentOutOfRangeException(nameof(batch), $"token id {id} is outside the vocabulary (0..{Config.VocabSize - 1})");
        return torch.tensor(batch.TokenIds.Select(i => (long)i).ToArray(), device: Device);
    }

    /// <summary>The decoupled router over the batch: Llama blocks with their own KV caches, then softmax of the head
    /// over the experts, [T * E] (ROUTER_DECOUPLED_SPEC.md).</summary>
    private float[] RunRouter(BatchLayout batch, Tensor ids)
    {
        var rw = Weights.Router!;
        var rc = Config.Router!;
        using var scope = torch.NewDisposeScope();
        int T = batch.TotalTokens;
        var x = rw.Embedding.index_select(0, ids).to(ScalarType.Float32);
        var positions = torch.tensor(batch.Positions.Select(p => (long)p).ToArray());
        var (cos, sin) = _routerRope!.For(positions, batch.Positions.Max());
        if (!IsCpu)
        {
            cos = cos.to(Device);
            sin = sin.to(Device);
        }
        for (int i = 0; i < rw.Layers.Count; i++)
        {
            var w = rw.Layers[i];
            var qkv = w.Qkv.Forward(RmsNorm(x, w.InputNorm));
            var q = _routerRope.Apply(qkv.narrow(1, 0, rc.QWidth).reshape(T, rc.NumHeads, rc.HeadDim), cos, sin).contiguous();
            var k = _routerRope.Apply(qkv.narrow(1, rc.QWidth, rc.KvWidth).reshape(T, rc.NumKvHeads, rc.HeadDim), cos, sin);
            var v = qkv.narrow(1, rc.QWidth + rc.KvWidth, rc.KvWidth).reshape(T, rc.NumKvHeads, rc.HeadDim);
            var attn = torch.empty(T, rc.QWidth, ScalarType.Float32, device: Device);
            for (int s = 0; s < batch.Segments.Count; s++)
            {
                var seg = batch.Segments[s];
                var cache = seg.Cache.Router ?? throw new InvalidOperationException("the sequence has no router cache: make it with NewSequence of this model");
                int start = batch.RowStart[s], len = seg.Tokens.Count, pos0 = cache.Length;
                var (keys, values) = cache.Append(i, k.narrow(0, start, len), v.narrow(0, start, len), pos0);
                attn.narrow(0, start, len).copy_(SegmentAttention(q.narrow(0, start, len), keys, values, pos0,
                    rc.NumHeads, rc.NumKvHeads, rc.HeadDim, window: null));
            }
            x = x + w.Output.Forward(attn);
            x = x + w.Mlp.Forward(RmsNorm(x, w.PostAttentionNorm));
        }
        using var logits = torch.matmul(RmsNorm(x, rw.FinalNorm), rw.Head.t());
        var z = TorchInterop.ToFloatArray(logits);
        int E = Config.NumExperts;
        var probs = new float[z.Length];
        Span<double> p = stackalloc double[E];
        for (int t = 0; t < T; t++)
        {
            SoftmaxInto(z.AsSpan(t * E, E), p);
            for (int e = 0; e < E; e++) probs[t * E + e] = (float)p[e];
        }
        return probs;
    }

    /// <summary>x + Attention(RMSNorm(x)) for layer <paramref name="layer"/>; stores the batch's keys/values in
    /// each sequence's cache (positions become visible to later forwards after <see cref="Commit"/>).</summary>
    public Tensor AttentionBlock(int layer, Tensor x, BatchLayout batch)
    {
        if (batch.IsAllDecode && UseNativeDecodePath && IsCpu) return DecodeAttentionBlock(layer, x, batch);
        var w = Weights.Layers[layer];
        var cfg = Config;
        int T = batch.TotalTokens, nH = cfg.NumHeads, nKV = cfg.NumKvHeads, hd = cfg.HeadDim;
        using var scope = torch.NewDisposeScope();
        var h = RmsNorm(x, w.InputNorm);
        var qkv = w.Qkv.Forward(h);
        var q = qkv.narrow(1, 0, cfg.QWidth);
        var k = qkv.narrow(1, cfg.QWidth, cfg.KvWidth);
        var v = qkv.narrow(1, cfg.QWidth + cfg.KvWidth, cfg.KvWidth);
        if (cfg.QkNorm == QkNormKind.FullWidth)
        {
            q = RmsNorm(q, w.QNorm!);
            k = RmsNorm(k, w.KNorm!);
        }
        if (cfg.ClipQkv is { } clip)
        {
            // Scalars held by `using` stay alive through the native calls (see RmsNorm).
            using Scalar lo = (-clip).ToScalar(), hi = clip.ToScalar();
            q = q.clamp(lo, hi);
            k = k.clamp(lo, hi);
            v = v.clamp(lo, hi);
        }
        q = q.reshape(T, nH, hd);
        k = k.reshape(T, nKV, hd);
        v = v.reshape(T, nKV, hd);
        if (cfg.QkNorm == QkNormKind.PerHead)
        {
            q = RmsNorm(q, w.QNorm!);
            k = RmsNorm(k, w.KNorm!);
        }
        var positions = torch.tensor(batch.Positions.Select(p => (long)p).ToArray());
        var (cos, sin) = _rope.For(positions, batch.Positions.Max());
        if (!IsCpu)
        {
            cos = cos.to(Device);
            sin = sin.to(Device);
        }
        q = _rope.Apply(q, cos, sin);
        k = _rope.Apply(k, cos, sin);

        q = q.contiguous();
        var attn = torch.empty(T, cfg.QWidth, ScalarType.Float32, device: Device);
        var decodeJobs = new List<(int Segment, int Row)>();
        for (int s = 0; s < batch.Segments.Count; s++)
        {
            var seg = batch.Segments[s];
            int start = batch.RowStart[s], len = seg.Tokens.Count, pos0 = seg.Cache.Length;
            var (keys, values) = seg.Cache.Append(layer, k.narrow(0, start, len), v.narrow(0, start, len), pos0);
            if (len == 1 && UseNativeDecodeAttention && IsCpu) decodeJobs.Add((s, start));
            else attn.narrow(0, start, len).copy_(SegmentAttention(q.narrow(0, start, len), keys, values, pos0));
        }
        if (decodeJobs.Count > 0)
        {
            unsafe
            {
                RunDecodeAttention(layer, batch, decodeJobs, (float*)TorchInterop.DataPointer(q), cfg.QWidth,
                    (float*)TorchInterop.DataPointer(attn));
            }
        }
        var o = w.Output.Forward(attn);
        return scope.MoveToOuter(x + o);
    }

    /// <summary>Single-token segments attend over their caches in native code (see <see cref="DecodeAttention"/>).</summary>
    public static bool UseNativeDecodeAttention { get; set; } = true;

    /// <summary>Attention for the given single-token rows: each row's query heads start at q + row*qStride; its
    /// output goes to attn + row*QWidth. The rows' keys/values must already be in their caches.</summary>
    private unsafe void RunDecodeAttention(int layer, BatchLayout batch, IReadOnlyList<(int Segment, int Row)> rows,
        float* q, int qStride, float* attn)
    {
        var cfg = Config;
        var jobs = new DecodeAttention.Job[rows.Count];
        for (int i = 0; i < rows.Count; i++)
        {
            var (s, row) = rows[i];
            var (kp, vp, cap) = batch.Segments[s].Cache.Raw(layer);
            int total = batch.Positions[row] + 1, first = 0;
            if (cfg.SlidingWindow is { } win && total > win) first = total - win;
            jobs[i] = new DecodeAttention.Job
            {
                Q = q + (long)row * qStride,
                Out = attn + (long)row * cfg.QWidth,
                K = (float*)kp,
                V = (float*)vp,
                Capacity = cap,
                FirstKey = first,
                Keys = total - first,
            };
        }
        DecodeAttention.Run(jobs, cfg.NumKvHeads, cfg.NumHeads / cfg.NumKvHeads, cfg.HeadDim);
    }

    /// <summary>Causal GQA attention of one segment's queries [len, nH, hd] over its cached keys/values
    /// [nKV, total, hd]; returns [len, nH*hd].</summary>
    private Tensor SegmentAttention(Tensor q, Tensor keys, Tensor values, int pos0) =>
        SegmentAttention(q, keys, values, pos0, Config.NumHeads, Config.NumKvHeads, Config.HeadDim, Config.SlidingWindow);

    private Tensor SegmentAttention(Tensor q, Tensor keys, Tensor values, int pos0, int nH, int nKV, int hd, int? window)
    {
        int len = (int)q.shape[0], g = nH / nKV;
        int total = (int)keys.shape[1];
        int firstKey = 0;
        if (window is { } win && len == 1 && total > win)
        {
            // Decode with a sliding window only sees the last `win` keys.
            firstKey = total - win;
            keys = keys.narrow(1, firstKey, win);
            values = values.narrow(1, firstKey, win);
            total = win;
        }
        // [len, nKV, g, hd] -> [nKV, g*len, hd] so one bmm per kv head serves its whole query group.
        var qh = q.reshape(len, nKV, g, hd).permute(1, 2, 0, 3).reshape(nKV, g * len, hd);
        using Scalar scale = (1.0 / Math.Sqrt(hd)).ToScalar(), minusInf = float.NegativeInfinity.ToScalar();
        var scores = torch.bmm(qh, keys.transpose(1, 2)).mul_(scale);
        if (len > 1 || window is not null)
        {
            var mask = CausalMask(len, total, pos0, firstKey, window);
            if (mask is not null)
                scores = scores.view(nKV, g, len, total).masked_fill(mask, minusInf).view(nKV, g * len, total);
        }
        var probs = torch.softmax(scores, 2);
        var ctx = torch.bmm(probs, values); // [nKV, g*len, hd]
        return ctx.view(nKV, g, len, hd).permute(2, 0, 1, 3).reshape(len, nH * hd);
    }

    /// <summary>True where query i (absolute position pos0+i) must not see key j (absolute firstKey+j).</summary>
    private Tensor? CausalMask(int len, int total, int pos0, int firstKey, int? win)
    {
        var m = new bool[len * total];
        bool any = false;
        for (int i = 0; i < len; i++)
        {
            int p = pos0 + i;
            for (int j = 0; j < total; j++)
            {
                int kp = firstKey + j;
                bool hide = kp > p || (win is { } w && p - kp >= w);
                m[i * total + j] = hide;
                any |= hide;
            }
        }
        return any ? torch.tensor(m, [len, total], device: Device) : null;
    }

    /// <summary>The MoE/MLP input: RMSNorm(x) with the post-attention norm.</summary>
    public Tensor MlpInput(int layer, Tensor x) => RmsNorm(x, Weights.Layers[layer].PostAttentionNorm);

    /// <summary>Softmax router + top-k per token (with the segment's routing override), grouped by expert.</summary>
    public ExpertRouting Route(int layer, Tensor mlpInput, BatchLayout batch)
    {
        var w = Weights.Layers[layer];
        if (!w.IsSparse) throw new InvalidOperationException($"layer {layer} is dense and has no router");
        if (Weights.Router is not null) return RouteFromRouter(layer, batch);
        float[] logits;
        using (var l = torch.matmul(mlpInput, w.Router!.t()))
            logits = TorchInterop.ToFloatArray(l);
        return RouteFromLogits(layer, logits, batch);
    }

    /// <summary><c>readme_moe</c>: the layer takes the decoupled router's choice (top-k of its probabilities, with each
    /// segment's override for this layer).</summary>
    private ExpertRouting RouteFromRouter(int layer, BatchLayout batch)
    {
        var probs = batch.RouterProbabilities
            ?? throw new InvalidOperationException("the router has not run for this batch (Embed runs it)");
        int E = Config.NumExperts, T = batch.TotalTokens;
        var experts = new int[T][];
        var weights = new float[T][];
        Span<double> p = stackalloc double[E];
        for (int t = 0; t < T; t++)
        {
            var ov = batch.Segments[batch.SegmentOfRow[t]].RoutingOrDefault;
            int k = Math.Min(ov.TopKExperts ?? Config.NumExpertsPerToken, E);
            for (int e = 0; e < E; e++) p[e] = probs[t * E + e];
            (experts[t], weights[t]) = TopK(p, k, e => ov.IsDisabled(layer, e), Config.NormTopKProb);
        }
        return new ExpertRouting(layer, experts, weights, E);
    }

    /// <summary>Softmax + top-k (with each segment's override) over router logits [T, E].</summary>
    private ExpertRouting RouteFromLogits(int layer, float[] logits, BatchLayout batch)
    {
        int E = Config.NumExperts;
        int T = batch.TotalTokens;
        var experts = new int[T][];
        var weights = new float[T][];
        Span<double> p = stackalloc double[E];
        for (int t = 0; t < T; t++)
            (experts[t], weights[t]) = RouteRow(layer, logits.AsSpan(t * E, E), batch.Segments[batch.SegmentOfRow[t]].RoutingOrDefault, p);
        return new ExpertRouting(layer, experts, weights, E);
    }

    /// <summary>One row's experts and weights from its router logits, with its segment's override for the layer
    /// (shared by exact routing and speculation, so a prediction differs from the routing only by its input).</summary>
    private (int[] Experts, float[] Weights) RouteRow(int layer, ReadOnlySpan<float> logits, RoutingOverride ov, Span<double> p)
    {
        int k = Math.Min(ov.TopKExperts ?? Config.NumExpertsPerToken, Config.NumExperts);
        SoftmaxInto(logits, p);
        return TopK(p, k, e => ov.IsDisabled(layer, e), Config.NormTopKProb);
    }

    private static void SoftmaxInto(ReadOnlySpan<float> logits, Span<double> p)
    {
        double max = double.NegativeInfinity;
        foreach (var v in logits) max = Math.Max(max, v);
        double sum = 0;
        for (int i = 0; i < logits.Length; i++) sum += p[i] = Math.Exp(logits[i] - max);
        for (int i = 0; i < logits.Length; i++) p[i] /= sum;
    }

    /// <summary>The k most probable allowed experts (ties: lower index), weights renormalised when asked.</summary>
    private static (int[] Experts, float[] Weights) TopK(ReadOnlySpan<double> p, int k, Func<int, bool> disabled, bool renormalise)
    {
        var picked = new List<int>(k);
        var used = new bool[p.Length];
        for (int j = 0; j < k; j++)
        {
            int best = -1;
            for (int e = 0; e < p.Length; e++)
            {
                if (used[e] || disabled(e)) continue;
                if (best < 0 || p[e] > p[best]) best = e;
            }
            if (best < 0) break;
            used[best] = true;
            picked.Add(best);
        }
        double sum = 0;
        foreach (int e in picked) sum += p[e];
        var w = new float[picked.Count];
        for (int j = 0; j < picked.Count; j++)
            w[j] = (float)(renormalise && sum > 0 ? p[picked[j]] / sum : p[picked[j]]);
        return (picked.ToArray(), w);
    }

    /// <summary>One routed expert's FFN over a block of rows [n, H] (already the normed MLP input).</summary>
    public Tensor RunExpert(int layer, int expert, Tensor rows) => LocalExperts(layer)[expert].Forward(rows);

    /// <summary>The layer's routed experts, or a clear error on a backbone-only node instead of an index error.</summary>
    private IReadOnlyList<ExpertFfn> LocalExperts(int layer)
    {
        var w = Weights.Layers[layer];
        if (w.IsSparse && !w.RoutedExpertsLoaded)
            throw new InvalidOperationException(
                $"layer {layer}'s routed experts are not loaded on this node (backbone-only weights); they run on expert nodes");
        return w.Experts;
    }

    /// <summary>x + sum over experts of gate weight * expert output (+ the shared expert where there is one).
    /// <paramref name="outputs"/> holds each group's output rows, in the order of <see cref="ExpertRouting.Groups"/>.</summary>
    public Tensor Combine(int layer, Tensor x, Tensor mlpInput, ExpertRouting routing, IReadOnlyList<Tensor> outputs)
    {
        using var scope = torch.NewDisposeScope();
        var w = Weights.Layers[layer];
        var acc = torch.zeros_like(x);
        for (int i = 0; i < routing.Groups.Count; i++)
        {
            var g = routing.Groups[i];
            var idx = torch.tensor(g.Rows.Select(r => (long)r).ToArray(), device: Device);
            var gw = torch.tensor(g.Weights, [g.Weights.Length, 1], device: Device);
            acc.index_add_(0, idx, outputs[i] * gw, One);
        }
        if (w.SharedExpert is not null) acc.add_(SharedExpertOutput(w, mlpInput));
        return scope.MoveToOuter(x + acc);
    }

    /// <summary>x + MLP(RMSNorm(x)) computed locally: routed experts grouped (one matmul set per active expert).</summary>
    public Tensor MlpBlock(int layer, Tensor x, BatchLayout batch)
    {
        var w = Weights.Layers[layer];
        var experts = LocalExperts(layer); // a backbone-only node fails here, before any work
        if (batch.IsAllDecode && UseNativeDecodePath && IsCpu && w.IsSparse
            && experts[0].GateUp.Weight.dtype == ScalarType.BFloat16
            && batch.TotalTokens <= Linear.NativeMaxRows)
            return DecodeMlpBlock(layer, x, batch);
        using var scope = torch.NewDisposeScope();
        var h = MlpInput(layer, x);
        if (w.DenseMlp is not null) return scope.MoveToOuter(x + w.DenseMlp.Forward(h));
        var routing = Route(layer, h, batch);
        RoutingObserver?.Invoke(routing);
        var outputs = new Tensor[routing.Groups.Count];
        for (int i = 0; i < routing.Groups.Count; i++)
        {
            var g = routing.Groups[i];
            var rows = h.index_select(0, torch.tensor(g.Rows.Select(r => (long)r).ToArray(), device: Device));
            outputs[i] = RunExpert(layer, g.Expert, rows);
        }
        return scope.MoveToOuter(Combine(layer, x, h, routing, outputs));
    }

    /// <summary>Final norm + LM head for the given rows (all rows when null): fp32 [rows, V].</summary>
    public Tensor Logits(Tensor x, int[]? rows)
    {
        using var scope = torch.NewDisposeScope();
        var sel = rows is null ? x : x.index_select(0, torch.tensor(rows.Select(r => (long)r).ToArray(), device: Device));
        var n = sel.shape[0] <= Linear.NativeMaxRows && IsCpu ? NativeRmsNorm(sel, Weights.FinalNorm) : RmsNorm(sel, Weights.FinalNorm);
        return scope.MoveToOuter(Weights.LmHead.Forward(n));
    }

    /// <summary>Makes the batch's tokens part of each sequence (advances every cache).</summary>
    public static void Commit(BatchLayout batch)
    {
        foreach (var s in batch.Segments) s.Cache.Advance(s.Cache.Length + s.Tokens.Count);
    }

    private unsafe Tensor NativeRmsNorm(Tensor x, Tensor weight)
    {
        var xc = x.contiguous();
        int rows = (int)xc.shape[0], width = (int)xc.shape[1];
        var y = torch.empty(rows, width, ScalarType.Float32);
        NativeOps.RmsNorm((float*)TorchInterop.DataPointer(xc), width, (float*)TorchInterop.DataPointer(weight),
            (float*)TorchInterop.DataPointer(y), width, rows, width, Config.RmsNormEps);
        return y;
    }

    private Tensor RmsNorm(Tensor x, Tensor weight)
    {
        // square() and a Scalar kept in a field: a temporary Scalar (x.pow(2), + eps) can be finalized by a GC
        // while torch still reads it (seen as "INTERNAL ASSERT FAILED at c10/core/Scalar.h" under load).
        var variance = x.square().mean([-1], keepdim: true);
        return x * torch.rsqrt(variance + _rmsEps) * weight;
    }

    /// <summary>The shared expert's output: gated by sigmoid(x . g) where the layer has a gate, as is otherwise.</summary>
    internal static Tensor SharedExpertOutput(DecoderLayerWeights w, Tensor h)
    {
        var y = w.SharedExpert!.Forward(h);
        if (w.SharedExpertGate is null) return y;
        using var gate = torch.sigmoid(torch.matmul(h, w.SharedExpertGate.t()));
        return y.mul_(gate);
    }

    public void Dispose()
    {
        _gateStack?.Dispose();
        _rmsEps.Dispose();
        _routerRope?.Dispose();
        _rope.Dispose();
        Weights.Dispose();
    }
}
