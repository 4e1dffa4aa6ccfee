using MoeServer.Kernels.Config;
using MoeServer.Kernels.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace MoeServer.Kernels.Model;

/// <summary>
/// The decode fast path: a batch of single-token segments runs each layer on raw memory (native norms, RoPE,
/// cache writes, attention, bf16 GEMVs straight into the residual), allocating a handful of tensors per layer
/// instead of dispatching ~100 small torch ops. Same math as the general path; the parity tests cover both.
/// </summary>
public sealed partial class MoeModel
{
    /// <summary>Pure decode batches take the native path (switch off to compare with the torch path).</summary>
    public static bool UseNativeDecodePath { get; set; } = true;

    private unsafe Tensor DecodeAttentionBlock(int layer, Tensor x, BatchLayout batch)
    {
        var w = Weights.Layers[layer];
        var cfg = Config;
        int T = batch.TotalTokens, H = cfg.HiddenSize, hd = cfg.HeadDim, qw = cfg.QWidth, kw = cfg.KvWidth;
        using var xc = x.contiguous();
        float* xp = (float*)TorchInterop.DataPointer(xc);
        using var h = torch.empty(T, H, ScalarType.Float32);
        float* hp = (float*)TorchInterop.DataPointer(h);
        float* normW = (float*)TorchInterop.DataPointer(w.InputNorm);
        NativeOps.RmsNorm(xp, H, normW, hp, H, T, H, cfg.RmsNormEps);

        using var qkv = w.Qkv.Forward(h);
        float* qkvp = (float*)TorchInterop.DataPointer(qkv);
        int stride = qw + 2 * kw;
        var (cosT, sinT) = _rope.Tables(batch.Positions.Max());
        int half = _rope.HalfDim;
        float* qn = w.QNorm is null ? null : (float*)TorchInterop.DataPointer(w.QNorm);
        float* kn = w.KNorm is null ? null : (float*)TorchInterop.DataPointer(w.KNorm);
        fixed (float* cosp = cosT, sinp = sinT)
        {
            for (int t = 0; t < T; t++)
            {
                float* q = qkvp + (long)t * stride, k = q + qw, v = k + kw;
                if (cfg.QkNorm == QkNormKind.FullWidth)
                {
                    NativeOps.RmsNorm(q, qw, qn, q, qw, 1, qw, cfg.RmsNormEps);
                    NativeOps.RmsNorm(k, kw, kn, k, kw, 1, kw, cfg.RmsNormEps);
                }
                if (cfg.ClipQkv is { } clip)
                {
                    NativeOps.Clamp(q, qw, (float)clip);
                    NativeOps.Clamp(k, kw, (float)clip);
                    NativeOps.Clamp(v, kw, (float)clip);
                }
                if (cfg.QkNorm == QkNormKind.PerHead)
                {
                    NativeOps.RmsNorm(q, hd, qn, q, hd, cfg.NumHeads, hd, cfg.RmsNormEps);
                    NativeOps.RmsNorm(k, hd, kn, k, hd, cfg.NumKvHeads, hd, cfg.RmsNormEps);
                }
                int pos = batch.Positions[t];
                NativeOps.Rope(q, cfg.NumHeads, hd, cosp + (long)pos * half, sinp + (long)pos * half);
                NativeOps.Rope(k, cfg.NumKvHeads, hd, cosp + (long)pos * half, sinp + (long)pos * half);
                batch.Segments[batch.SegmentOfRow[t]].Cache.AppendRow(layer, pos, k, v);
            }
        }

        using var attn = torch.empty(T, qw, ScalarType.Float32);
        float* ap = (float*)TorchInterop.DataPointer(attn);
        var rows = new (int Segment, int Row)[T];
        for (int t = 0; t < T; t++) rows[t] = (batch.SegmentOfRow[t], t);
        RunDecodeAttention(layer, batch, rows, qkvp, stride, ap);

        using var o = w.Output.Forward(attn);
        var result = torch.empty(T, H, ScalarType.Float32);
        NativeOps.Add(xp, (float*)TorchInterop.DataPointer(o), (float*)TorchInterop.DataPointer(result), (long)T * H);
        return result;
    }

    private unsafe Tensor DecodeMlpBlock(int layer, Tensor x, BatchLayout batch)
    {
        var w = Weights.Layers[layer];
        var experts = LocalExperts(layer);
        var cfg = Config;
        int T = batch.TotalTokens, H = cfg.HiddenSize, E = cfg.NumExperts;
        using var xc = x.contiguous();
        float* xp = (float*)TorchInterop.DataPointer(xc);
        using var h = torch.empty(T, H, ScalarType.Float32);
        float* hp = (float*)TorchInterop.DataPointer(h);
        NativeOps.RmsNorm(xp, H, (float*)TorchInterop.DataPointer(w.PostAttentionNorm), hp, H, T, H, cfg.RmsNormEps);

        var routing = Weights.Router is not null ? RouteFromRouter(layer, batch) : RouteFromLogits(layer, RouterLogits(w.Router!, hp, T), batch);
        RoutingObserver?.Invoke(routing);

        // Residual first; every expert adds its weighted output into it.
        var result = torch.empty(T, H, ScalarType.Float32);
        float* outp = (float*)TorchInterop.DataPointer(result);
        Buffer.MemoryCopy(xp, outp, (long)T * H * 4, (long)T * H * 4);
        int maxRows = routing.Groups.Count == 0 ? 0 : routing.Groups.Max(g => g.Rows.Length);
        int I = cfg.ExpertIntermediateSize;
        var xg = new float[maxRows * H];
        var hg = new float[maxRows * I];
        var yg = new float[maxRows * H];
        fixed (float* xgp = xg, hgp = hg, ygp = yg)
        {
            foreach (var g in routing.Groups)
            {
                var ffn = experts[g.Expert];
                ushort* gu = (ushort*)TorchInterop.DataPointer(ffn.GateUp.Weight);
                ushort* down = (ushort*)TorchInterop.DataPointer(ffn.Down.Weight);
                int n = g.Rows.Length;
                for (int i = 0; i < n; i++)
                    Buffer.MemoryCopy(hp + (long)g.Rows[i] * H, xgp + (long)i * H, H * 4, H * 4);
                Bf16Gemv.SiluGateUp(gu, I, H, xgp, n, hgp);
                if (n == 1)
                {
                    // One row: the down projection accumulates straight into the residual, scaled by the gate weight.
                    Bf16Gemv.Multiply(down, H, I, hgp, 1, outp + (long)g.Rows[0] * H, alpha: g.Weights[0], accumulate: true);
                    continue;
                }
                for (int i = 0; i < n; i++) NativeOps.Scale(hgp + (long)i * I, I, g.Weights[i]);
                Bf16Gemv.Multiply(down, H, I, hgp, n, ygp);
                for (int i = 0; i < n; i++)
                {
                    float* dst = outp + (long)g.Rows[i] * H;
                    NativeOps.Add(dst, ygp + (long)i * H, dst, H);
                }
            }
        }
        if (w.SharedExpert is not null)
        {
            using var scope = torch.NewDisposeScope();
            result.add_(SharedExpertOutput(w, h));
        }
        return result;
    }
}
