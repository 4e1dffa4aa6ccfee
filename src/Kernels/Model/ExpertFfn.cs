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

    /// <summary>
    /// rows [count, H] fp32 in a managed array -> [count, H] fp32: the form expert entities receive and send.
    /// Decode-sized bf16 blocks on the CPU run the native kernels straight on the arrays (no tensor round trip).
    /// </summary>
    public float[] Forward(float[] rows, int count)
    {
        int h = (int)GateUp.InFeatures;
        if (rows.Length != (long)count * h)
            throw new ArgumentException($"expected {count} rows of {h} floats, got {rows.Length} floats", nameof(rows));
        var y = new float[(long)count * h];
        if (count == 0) return y;
        if (GateUp.Weight.dtype == ScalarType.BFloat16 && count <= Linear.NativeMaxRows && GateUp.Weight.device_type == DeviceType.CPU)
        {
            // The intermediate activations are scratch: pooled, so decode steps do not churn the large-object heap.
            var hidden = System.Buffers.ArrayPool<float>.Shared.Rent(count * IntermediateSize);
            try
            {
                unsafe
                {
                    fixed (float* xp = rows, hp = hidden, yp = y)
                    {
                        Bf16Gemv.SiluGateUp((ushort*)TorchInterop.DataPointer(GateUp.Weight), IntermediateSize, h, xp, count, hp);
                        Bf16Gemv.Multiply((ushort*)TorchInterop.DataPointer(Down.Weight), h, IntermediateSize, hp, count, yp);
                    }
                }
            }
            finally
            {
                System.Buffers.ArrayPool<float>.Shared.Return(hidden);
            }
            return y;
        }
        using var scope = torch.NewDisposeScope();
        var x = torch.tensor(rows, [count, h]).to(GateUp.Weight.device);
        return TorchInterop.ToFloatArray(Forward(x));
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

    /// <summary>This FFN's weights moved to <paramref name="device"/> (this instance is disposed).</summary>
    public ExpertFfn To(Device device)
    {
        var moved = new ExpertFfn(GateUp.Weight.to(device), Down.Weight.to(device));
        Dispose();
        return moved;
    }

    public void Dispose()
    {
        GateUp.Dispose();
        Down.Dispose();
    }
}
