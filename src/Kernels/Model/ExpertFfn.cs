using TorchSharp;
using static TorchSharp.torch;

namespace MoeServer.Kernels.Model;

/// <summary>
/// A SwiGLU feed-forward: down(silu(gate x) * up x). Gate and up are fused into one [2I, H] matrix so one matmul
/// reads both; used for routed experts, the Qwen2-MoE shared expert and dense MLP layers alike.
/// </summary>
public sealed class ExpertFfn : IDisposable
{
    public Linear GateUp { get; }
    public Linear Down { get; }
    public int IntermediateSize { get; }
    public long WeightBytes => GateUp.WeightBytes + Down.WeightBytes;

    public ExpertFfn(Tensor gateUp, Tensor down)
    {
        GateUp = new Linear(gateUp);
        Down = new Linear(down);
        IntermediateSize = (int)(gateUp.shape[0] / 2);
    }

    /// <summary>rows [n, H] fp32 -> [n, H] fp32.</summary>
    public Tensor Forward(Tensor rows)
    {
        using var scope = torch.NewDisposeScope();
        var gu = GateUp.Forward(rows);
        var gate = gu.narrow(1, 0, IntermediateSize);
        var up = gu.narrow(1, IntermediateSize, IntermediateSize);
        var h = torch.nn.functional.silu(gate).mul_(up);
        return scope.MoveToOuter(Down.Forward(h));
    }

    public void Dispose()
    {
        GateUp.Dispose();
        Down.Dispose();
    }
}
