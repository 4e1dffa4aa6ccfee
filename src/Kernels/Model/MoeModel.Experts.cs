using MoeServer.Kernels.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace MoeServer.Kernels.Model;

/// <summary>
/// A sparse layer's MLP split around the routed experts, for engines that run experts elsewhere (actors, other
/// nodes): <see cref="MoeModel.BeginMoe"/> norms and gates the batch and groups rows by expert;
/// the caller runs each group's expert on <see cref="GroupInput"/>; <see cref="MoeModel.FinishMoe"/> adds the
/// gate-weighted outputs (and the shared expert) to the residual. Same math as <see cref="MoeModel.MlpBlock"/>.
/// </summary>
public sealed class MoeLayerWork : IDisposable
{
    internal MoeLayerWork(int layer, Tensor input, float[] hostInput, int width, ExpertRouting routing)
    {
        Layer = layer;
        Input = input;
        HostInput = hostInput;
        Width = width;
        Routing = routing;
    }

    public int Layer { get; }
    /// <summary>The normed MLP input [T, H] fp32 on the model's device.</summary>
    public Tensor Input { get; }
    /// <summary>The same rows in host memory, where expert inputs are gathered from.</summary>
    public float[] HostInput { get; }
    public int Width { get; }
    public ExpertRouting Routing { get; }

    /// <summary>The rows of group <paramref name="group"/> (one expert's work), [n, H] fp32.</summary>
    public float[] GroupInput(int group)
    {
        var rows = Routing.Groups[group].Rows;
        var result = new float[(long)rows.Length * Width];
        for (int i = 0; i < rows.Length; i++)
            Array.Copy(HostInput, (long)rows[i] * Width, result, (long)i * Width, Width);
        return result;
    }

    public void Dispose() => Input.Dispose();
}

public sealed partial class MoeModel
{
    /// <summary>Norm + gate for sparse layer <paramref name="layer"/>: the experts each row needs, grouped.</summary>
    public MoeLayerWork BeginMoe(int layer, Tensor x, BatchLayout batch)
    {
        var w = Weights.Layers[layer];
        if (!w.IsSparse) throw new InvalidOperationException($"layer {layer} is dense and has no router");
        int T = batch.TotalTokens, H = Config.HiddenSize;
        bool native = T <= Linear.NativeMaxRows && x.device_type == DeviceType.CPU;
        var h = native ? NativeRmsNorm(x, w.PostAttentionNorm) : MlpInput(layer, x).contiguous();
        var host = TorchInterop.ToFloatArray(h);
        ExpertRouting routing;
        if (Weights.Router is not null)
        {
            routing = RouteFromRouter(layer, batch);
        }
        else
        {
            float[] logits;
            if (native)
            {
                unsafe
                {
                    fixed (float* hp = host) logits = RouterLogits(w.Router!, hp, T);
                }
            }
            else
            {
                using var l = torch.matmul(h, w.Router!.t());
                logits = TorchInterop.ToFloatArray(l);
            }
            routing = RouteFromLogits(layer, logits, batch);
        }
        RoutingObserver?.Invoke(routing);
        return new MoeLayerWork(layer, h, host, H, routing);
    }

    /// <summary>x + sum of gate weight * expert output over each row's experts (+ shared expert). <paramref name="outputs"/>
    /// holds each group's output rows [n, H] in the order of <see cref="ExpertRouting.Groups"/>.</summary>
    public Tensor FinishMoe(MoeLayerWork work, Tensor x, IReadOnlyList<float[]> outputs)
    {
        var w = Weights.Layers[work.Layer];
        int T = (int)x.shape[0], H = Config.HiddenSize;
        var groups = work.Routing.Groups;
        if (outputs.Count != groups.Count)
            throw new ArgumentException($"expected {groups.Count} expert outputs, got {outputs.Count}", nameof(outputs));
        var acc = new float[(long)T * H];
        unsafe
        {
            fixed (float* ap = acc)
            {
                for (int i = 0; i < groups.Count; i++)
                {
                    var g = groups[i];
                    if (outputs[i].Length != (long)g.Rows.Length * H)
                        throw new ArgumentException($"expert {g.Expert} returned {outputs[i].Length} floats for {g.Rows.Length} rows", nameof(outputs));
                    fixed (float* op = outputs[i])
                    {
                        for (int r = 0; r < g.Rows.Length; r++)
                            NativeOps.Axpy(g.Weights[r], op + (long)r * H, ap + (long)g.Rows[r] * H, H);
                    }
                }
            }
        }
        using var scope = torch.NewDisposeScope();
        var result = x + torch.tensor(acc, [T, H]).to(x.device);
        if (w.SharedExpert is not null) result.add_(SharedExpertOutput(w, work.Input));
        return scope.MoveToOuter(result);
    }

    /// <summary>Router logits [T, E] by E dot products per row (decode-sized batches; fp32 like the torch path).</summary>
    private unsafe float[] RouterLogits(Tensor router, float* h, int rows)
    {
        int E = Config.NumExperts, H = Config.HiddenSize;
        float* rw = (float*)TorchInterop.DataPointer(router);
        var logits = new float[rows * E];
        for (int t = 0; t < rows; t++)
            for (int e = 0; e < E; e++)
                logits[t * E + e] = NativeOps.Dot(h + (long)t * H, rw + (long)e * H, H);
        return logits;
    }
}
