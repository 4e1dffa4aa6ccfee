using System.Diagnostics;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Formats;
using TorchSharp;
using static TorchSharp.torch;

namespace MoeServer.Kernels.Model;

/// <summary>
/// The weights of a checkpoint, read from the memory-mapped safetensors into tensors of the chosen precision: all of
/// them, or the backbone without routed experts (<see cref="WeightSet"/>); <see cref="LoadExpert"/> reads one routed
/// expert on its own. Accepts per-expert tensor names and the fused transformers-v5 layout; every tensor's shape is
/// checked against config.json and a mismatch names the file and tensor.
/// </summary>
public sealed class ModelWeights : IDisposable
{
    public required ModelConfig Config { get; init; }
    public required Tensor Embedding { get; init; }
    public required IReadOnlyList<DecoderLayerWeights> Layers { get; init; }
    public required Tensor FinalNorm { get; init; }
    public required Linear LmHead { get; init; }
    /// <summary>The decoupled router (<c>readme_moe</c>); part of the backbone.</summary>
    public RouterWeights? Router { get; init; }
    /// <summary>Bytes read from the checkpoint files (only the tensors of <see cref="WeightSet"/>).</summary>
    public long BytesRead { get; init; }
    /// <summary>Which tensors were loaded; with <see cref="WeightSet.Backbone"/> sparse layers have no experts.</summary>
    public WeightSet WeightSet { get; init; } = WeightSet.All;
    public bool TiedLmHead { get; init; }
    public TimeSpan LoadTime { get; init; }

    /// <summary>Reports (tensors done, tensors total) while loading.</summary>
    public delegate void LoadProgress(int done, int total);

    public static ModelWeights Load(string dir, WeightPrecision precision, LoadProgress? progress = null,
        WeightSet set = WeightSet.All)
    {
        var cfg = ModelConfig.Load(dir);
        using var ck = Checkpoint.Open(dir);
        return Load(cfg, ck, precision, progress, set);
    }

    public static ModelWeights Load(ModelConfig cfg, Checkpoint ck, WeightPrecision precision, LoadProgress? progress = null,
        WeightSet set = WeightSet.All)
    {
        var sw = Stopwatch.StartNew();
        var reader = new Reader(ck, WeightType(precision));
        int total = set == WeightSet.All ? ck.TensorNames.Count : ck.TensorNames.Count(n => !IsRoutedExpertTensor(n));
        var layers = new List<DecoderLayerWeights>(cfg.NumLayers);
        using (torch.no_grad())
        {
            try
            {
                int H = cfg.HiddenSize;
                var embed = reader.Weight("model.embed_tokens.weight", cfg.VocabSize, H);
                var loaded = new DecoderLayerWeights?[cfg.NumLayers];
                var failed = new Exception?[cfg.NumLayers];
                // Layers load in parallel: copying from the page cache is bound by one core's memcpy + faults.
                Parallel.For(0, cfg.NumLayers, new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount }, l =>
                {
                    try
                    {
                        using var noGrad = torch.no_grad();
                        loaded[l] = LoadLayer(cfg, reader, l, set);
                        progress?.Invoke(reader.Count, total);
                    }
                    catch (Exception e)
                    {
                        failed[l] = e;
                    }
                });
                // The first broken layer is reported, whichever thread found its error first.
                if (failed.FirstOrDefault(e => e is not null) is { } first)
                {
                    foreach (var l in loaded) l?.Dispose();
                    System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(first).Throw();
                }
                layers.AddRange(loaded!);
                var norm = reader.Fp32("model.norm.weight", H);
                var router = cfg.Router is null ? null : LoadRouter(cfg, reader);
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
                    Router = router,
                    TiedLmHead = !ck.Contains("lm_head.weight"),
                    BytesRead = reader.Bytes,
                    WeightSet = set,
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

    /// <summary>
    /// One routed expert of one layer, reading only its tensors (an expert node loads the experts it hosts on demand).
    /// Shapes are checked as in <see cref="Load(ModelConfig, Checkpoint, WeightPrecision, LoadProgress?, WeightSet)"/>.
    /// </summary>
    /// <param name="touched">Receives the checkpoint byte ranges the expert was read from (to drop them from the
    /// page cache afterwards, or to check they are cached).</param>
    public static ExpertFfn LoadExpert(ModelConfig cfg, Checkpoint ck, int layer, int expert, WeightPrecision precision,
        ICollection<CheckpointRange>? touched = null)
    {
        ArgumentNullException.ThrowIfNull(cfg);
        ArgumentNullException.ThrowIfNull(ck);
        if (layer < 0 || layer >= cfg.NumLayers)
            throw new ArgumentOutOfRangeException(nameof(layer), layer,
                $"layer {layer} is out of range: the model has {cfg.NumLayers} layers (0..{cfg.NumLayers - 1})");
        if (!cfg.IsSparseLayer(layer))
            throw new ArgumentOutOfRangeException(nameof(layer), layer, $"layer {layer} is a dense MLP layer: it has no routed experts");
        if (expert < 0 || expert >= cfg.NumExperts)
            throw new ArgumentOutOfRangeException(nameof(expert), expert,
                $"expert {expert} is out of range: layer {layer} has {cfg.NumExperts} experts (0..{cfg.NumExperts - 1})");
        var r = new Reader(ck, WeightType(precision)) { Touched = touched };
        using var noGrad = torch.no_grad();
        return LoadRoutedExpert(cfg, r, MoePrefix(cfg, r, layer), expert);
    }

    private static ScalarType WeightType(WeightPrecision precision) =>
        precision == WeightPrecision.BF16 ? ScalarType.BFloat16 : ScalarType.Float32;

    /// <summary>Routed-expert tensors in either layout (shared experts are "shared_expert.", not "experts.").</summary>
    private static bool IsRoutedExpertTensor(string name) => name.Contains(".experts.", StringComparison.Ordinal);

    /// <summary>Where a sparse layer's router and experts live: Mixtral's per-expert checkpoints use
    /// block_sparse_moe., the fused v5 layout and the other families mlp.</summary>
    private static string MoePrefix(ModelConfig cfg, Reader r, int l)
    {
        string p = $"model.layers.{l}.";
        return cfg.Architecture == ModelArchitecture.Mixtral && r.Has(p + "block_sparse_moe.gate.weight")
            ? p + "block_sparse_moe."
            : p + "mlp.";
    }

    private static ExpertFfn LoadRoutedExpert(ModelConfig cfg, Reader r, string moe, int e)
    {
        int E = cfg.NumExperts, I = cfg.ExpertIntermediateSize, H = cfg.HiddenSize;
        if (r.Has(moe + "experts.gate_up_proj"))
        {
            // transformers v5 fused layout: one [E, 2I, H] and one [E, H, I] tensor per layer; read expert e's slice.
            return Ffn(r.Slice(moe + "experts.gate_up_proj", [E, 2 * I, H], e),
                () => r.Slice(moe + "experts.down_proj", [E, H, I], e));
        }
        string ep = $"{moe}experts.{e}.";
        return cfg.Architecture == ModelArchitecture.Mixtral
            ? LoadFfn(r, ep + "w1.weight", ep + "w3.weight", ep + "w2.weight", I, H)
            : LoadFfn(r, ep + "gate_proj.weight", ep + "up_proj.weight", ep + "down_proj.weight", I, H);
    }

    private static RouterWeights LoadRouter(ModelConfig cfg, Reader r)
    {
        var rc = cfg.Router!;
        int Hr = rc.HiddenSize;
        var layers = new List<RouterLayerWeights>(rc.NumLayers);
        for (int i = 0; i < rc.NumLayers; i++)
        {
            string p = $"router.layers.{i}.";
            var qkv = r.Stacked(Hr, (p + "self_attn.q_proj.weight", rc.QWidth), (p + "self_attn.k_proj.weight", rc.KvWidth),
                (p + "self_attn.v_proj.weight", rc.KvWidth));
            layers.Add(new RouterLayerWeights
            {
                InputNorm = r.Fp32(p + "input_layernorm.weight", Hr).DetachFromDisposeScope(),
                Qkv = new Linear(qkv),
                Output = new Linear(r.Weight(p + "self_attn.o_proj.weight", Hr, rc.QWidth)),
                PostAttentionNorm = r.Fp32(p + "post_attention_layernorm.weight", Hr).DetachFromDisposeScope(),
                Mlp = LoadFfn(r, p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight", p + "mlp.down_proj.weight", rc.IntermediateSize, Hr),
            });
        }
        return new RouterWeights
        {
            Embedding = r.Weight("router.embed_tokens.weight", cfg.VocabSize, Hr).DetachFromDisposeScope(),
            Layers = layers,
            FinalNorm = r.Fp32("router.norm.weight", Hr).DetachFromDisposeScope(),
            Head = r.Fp32("router.head.weight", cfg.NumExperts, Hr).DetachFromDisposeScope(),
        };
    }

    private static DecoderLayerWeights LoadLayer(ModelConfig cfg, Reader r, int l, WeightSet set)
    {
        string p = $"model.layers.{l}.";
        int H = cfg.HiddenSize, q = cfg.QWidth, kv = cfg.KvWidth;
        var qkv = r.Stacked(H, (p + "self_attn.q_proj.weight", q), (p + "self_attn.k_proj.weight", kv),
            (p + "self_attn.v_proj.weight", kv));
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
            string moe = MoePrefix(cfg, r, l);
            int E = cfg.NumExperts;
            // readme_moe layers have no gate: the decoupled router chooses for every layer.
            if (cfg.Router is null) router = r.Fp32(moe + "gate.weight", E, H);
            if (set == WeightSet.All)
            {
                experts = new ExpertFfn[E];
                for (int e = 0; e < E; e++) experts[e] = LoadRoutedExpert(cfg, r, moe, e);
            }
            if (cfg.SharedExpertIntermediateSize > 0)
            {
                string sp = p + "mlp.shared_expert.";
                shared = LoadFfn(r, sp + "gate_proj.weight", sp + "up_proj.weight", sp + "down_proj.weight",
                    cfg.SharedExpertIntermediateSize, H);
                if (cfg.Router is null) sharedGate = r.Fp32(p + "mlp.shared_expert_gate.weight", 1, H);
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
            IsSparse = cfg.IsSparseLayer(l),
            Experts = experts,
            RoutedExpertsLoaded = set == WeightSet.All,
            SharedExpert = shared,
            SharedExpertGate = sharedGate?.DetachFromDisposeScope(),
            DenseMlp = dense,
        };
    }

    private static ExpertFfn LoadFfn(Reader r, string gate, string up, string down, int width, int hidden) =>
        Ffn(r.Stacked(hidden, (gate, width), (up, width)), () => r.Weight(down, hidden, width));

    /// <summary>Pairs gate|up with down; a failing down read (missing tensor, bad shape) frees gate|up.</summary>
    private static ExpertFfn Ffn(Tensor gateUp, Func<Tensor> down)
    {
        try
        {
            return new ExpertFfn(gateUp, down());
        }
        catch
        {
            gateUp.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Reads tensors with shape checks into the weight precision (matrices) or fp32 (vectors, router). Bytes go
    /// from the mapped file straight into the destination tensor (one copy) when the dtypes agree; weight memory is
    /// advised to use huge pages before it is first touched, which the bandwidth-bound decode kernels need.
    /// </summary>
    private sealed unsafe class Reader(Checkpoint ck, ScalarType weightType)
    {
        private int _count;
        private long _bytes;
        public int Count => Volatile.Read(ref _count);
        public long Bytes => Interlocked.Read(ref _bytes);
        /// <summary>Where every copied range came from (single-threaded readers only).</summary>
        public ICollection<CheckpointRange>? Touched { get; init; }

        public bool Has(string name) => ck.Contains(name);

        public Tensor Weight(string name, params long[] shape) => Stacked(shape.Length == 2 ? shape[1] : -1, shape, (name, -1));

        public Tensor Fp32(string name, params long[] shape)
        {
            var e = ck.Require(name, shape);
            var t = torch.empty(e.Shape, ScalarType.Float32);
            CopyInto(e, (byte*)TorchInterop.DataPointer(t), ScalarType.Float32, 0, e.Shape[0]);
            return t;
        }

        /// <summary>Matrices [rows_i, cols] stacked along rows into one weight tensor (q|k|v, gate|up).</summary>
        public Tensor Stacked(long cols, params (string Name, long Rows)[] parts) => Stacked(cols, null, parts);

        private Tensor Stacked(long cols, long[]? singleShape, params (string Name, long Rows)[] parts)
        {
            long[] shape = singleShape ?? [parts.Sum(p => p.Rows), cols];
            var t = torch.empty(shape, weightType);
            byte* dst = (byte*)TorchInterop.DataPointer(t);
            long esize = t.element_size();
            HugePages.Advise(dst, t.numel() * esize);
            long rowOffset = 0;
            foreach (var (name, rows) in parts)
            {
                var e = singleShape is not null ? ck.Require(name, singleShape) : ck.Require(name, rows, cols);
                long rowBytes = singleShape is not null ? t.numel() / shape[0] * esize : cols * esize;
                CopyInto(e, dst + rowOffset * rowBytes, weightType, 0, e.Shape[0]);
                rowOffset += e.Shape[0];
            }
            return t;
        }

        /// <summary>Expert <paramref name="index"/> of a fused [E, ...] tensor, as its own weight tensor.</summary>
        public Tensor Slice(string name, long[] fullShape, int index)
        {
            var e = ck.Require(name, fullShape);
            long[] shape = fullShape[1..];
            var t = torch.empty(shape, weightType);
            byte* dst = (byte*)TorchInterop.DataPointer(t);
            HugePages.Advise(dst, t.numel() * t.element_size());
            CopyInto(e, dst, weightType, index, 1);
            return t;
        }

        /// <summary>Copies entries [first, first+count) of e's outer dimension into dst, converting dtype if needed.</summary>
        private void CopyInto(TensorEntry e, byte* dst, ScalarType target, long first, long count)
        {
            long outer = e.Shape.Length == 0 ? 1 : e.Shape[0];
            long bytesPerOuter = e.ByteLength / Math.Max(1, outer);
            byte* src = ck.GetPointer(e) + first * bytesPerOuter;
            long n = count * bytesPerOuter;
            Touched?.Add(new CheckpointRange(e, first * bytesPerOuter, n));
            var diskType = e.DType.ToScalarType();
            HugePages.PopulateRead(src, n);
            if (diskType == target)
            {
                Buffer.MemoryCopy(src, dst, n, n);
            }
            else
            {
                long elements = n / e.DType.ElementSize();
                using var raw = TorchInterop.FromBytes(src, n, diskType, [elements]);
                using var converted = raw.to(target);
                long outBytes = elements * converted.element_size();
                Buffer.MemoryCopy(TorchInterop.DataPointer(converted), dst, outBytes, outBytes);
            }
            Interlocked.Increment(ref _count);
            Interlocked.Add(ref _bytes, n);
        }
    }

    /// <summary>
    /// These weights on <paramref name="device"/> (a node's compute device, e.g. cuda:0); this instance is disposed.
    /// Loading always goes through host memory (the mapped file), so on a GPU node this is the host-to-device copy.
    /// </summary>
    public ModelWeights To(Device device)
    {
        if (device.type == DeviceType.CPU) return this;
        Tensor Move(Tensor t) => t.to(device).DetachFromDisposeScope();
        var layers = Layers.Select(l => new DecoderLayerWeights
        {
            InputNorm = Move(l.InputNorm),
            PostAttentionNorm = Move(l.PostAttentionNorm),
            Qkv = l.Qkv.To(device),
            Output = l.Output.To(device),
            QNorm = l.QNorm is null ? null : Move(l.QNorm),
            KNorm = l.KNorm is null ? null : Move(l.KNorm),
            Router = l.Router is null ? null : Move(l.Router),
            Experts = l.Experts.Select(e => new ExpertFfn(Move(e.GateUp.Weight), Move(e.Down.Weight))).ToArray(),
            SharedExpert = l.SharedExpert is { } s ? new ExpertFfn(Move(s.GateUp.Weight), Move(s.Down.Weight)) : null,
            SharedExpertGate = l.SharedExpertGate is null ? null : Move(l.SharedExpertGate),
            DenseMlp = l.DenseMlp is { } d ? new ExpertFfn(Move(d.GateUp.Weight), Move(d.Down.Weight)) : null,
            RoutedExpertsLoaded = l.RoutedExpertsLoaded,
            IsSparse = l.IsSparse,
        }).ToList();
        var embed = Move(Embedding);
        var moved = new ModelWeights
        {
            Config = Config,
            Embedding = embed,
            Layers = layers,
            FinalNorm = Move(FinalNorm),
            LmHead = TiedLmHead ? new Linear(embed.alias()) : LmHead.To(device),
            Router = Router is { } rw ? new RouterWeights
            {
                Embedding = Move(rw.Embedding),
                Layers = rw.Layers.Select(l => new RouterLayerWeights
                {
                    InputNorm = Move(l.InputNorm),
                    Qkv = l.Qkv.To(device),
                    Output = l.Output.To(device),
                    PostAttentionNorm = Move(l.PostAttentionNorm),
                    Mlp = new ExpertFfn(Move(l.Mlp.GateUp.Weight), Move(l.Mlp.Down.Weight)),
                }).ToList(),
                FinalNorm = Move(rw.FinalNorm),
                Head = Move(rw.Head),
            } : null,
            BytesRead = BytesRead,
            WeightSet = WeightSet,
            TiedLmHead = TiedLmHead,
            LoadTime = LoadTime,
        };
        Dispose();
        return moved;
    }

    public long ParameterCount()
    {
        long n = Embedding.numel() + FinalNorm.numel() + (Router?.ParameterCount() ?? 0);
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
        Router?.Dispose();
    }
}
