using MoeServer.Kernels.Native;
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
        if (GateUp.Weight.dtype == ScalarType.BFloat16 && rows.shape[0] <= Linear.NativeMaxRows && rows.device_type == DeviceType.CPU)
            return NativeForward(rows);
        using var scope = torch.NewDisposeScope();
        var gu = GateUp.Forward(rows);
        var gate = gu.narrow(1, 0, IntermediateSize);
        var up = gu.narrow(1, IntermediateSize, IntermediateSize);
        var h = torch.nn.functional.silu(gate).mul_(up);
        return scope.MoveToOuter(Down.Forward(h));
    }

    /// <summary>Decode-sized batches: gate and up read in one fused pass, silu(g)*u never leaves the kernel.</summary>
    private unsafe Tensor NativeForward(Tensor rows)
    {
        using var x = TorchInterop.ContiguousFloat32(rows);
        int m = (int)x.shape[0], k = (int)GateUp.InFeatures;
        using var h = torch.empty(m, IntermediateSize, ScalarType.Float32);
        Bf16Gemv.SiluGateUp((ushort*)TorchInterop.DataPointer(GateUp.Weight), IntermediateSize, k,
            (float*)TorchInterop.DataPointer(x), m, (float*)TorchInterop.DataPointer(h));
        return Down.Forward(h);
    }

    public void Dispose()
    {
        GateUp.Dispose();
        Down.Dispose();
    }
}
