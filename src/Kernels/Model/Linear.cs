using MoeServer.Kernels.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace MoeServer.Kernels.Model;

/// <summary>
/// y = x W^T (+ b) with W [out, in] held in the model's weight precision; x and y are fp32.
/// bf16 weights multiply a bf16 copy of x with fp32 accumulation inside the matmul; at small batch (decode) the
/// hand-written bandwidth-bound kernel (<see cref="Bf16Gemv"/>) reads the bf16 weights directly with fp32 x.
/// </summary>
public sealed class Linear : IDisposable
{
    /// <summary>Up to this many rows the native kernel runs; above it torch's blocked matmul is faster.</summary>
    public static int NativeMaxRows { get; set; } = 32;

    public Tensor Weight { get; }
    public Tensor? Bias { get; }
    public long InFeatures => Weight.shape[1];
    public long OutFeatures => Weight.shape[0];
    public long WeightBytes => Weight.numel() * Weight.element_size();

    public Linear(Tensor weight, Tensor? bias = null)
    {
        Weight = weight.DetachFromDisposeScope();
        Bias = bias?.DetachFromDisposeScope();
    }

    public Tensor Forward(Tensor x)
    {
        if (Weight.dtype == ScalarType.BFloat16 && x.shape[0] <= NativeMaxRows && x.device_type == DeviceType.CPU)
            return NativeForward(x);
        if (Weight.dtype == ScalarType.Float32)
            return torch.nn.functional.linear(x, Weight, Bias);
        if (!TorchRuntime.Bf16MatmulIsFast && Weight.device_type == DeviceType.CPU)
        {
            // No fast bf16 matmul on this CPU: widen the weight block once and use the fp32 matmul.
            using var wf = Weight.to(ScalarType.Float32);
            using var xf = x.to(ScalarType.Float32);
            return torch.nn.functional.linear(xf, wf, Bias);
        }
        using var xb = x.to(Weight.dtype);
        using var yb = torch.nn.functional.linear(xb, Weight);
        var y = yb.to(ScalarType.Float32);
        if (Bias is not null) y.add_(Bias);
        return y;
    }

    private unsafe Tensor NativeForward(Tensor x)
    {
        using var xc = TorchInterop.ContiguousFloat32(x);
        int m = (int)xc.shape[0], n = (int)OutFeatures, k = (int)InFeatures;
        var y = torch.empty(m, n, ScalarType.Float32);
        Bf16Gemv.Multiply((ushort*)TorchInterop.DataPointer(Weight), n, k, (float*)TorchInterop.DataPointer(xc), m,
            (float*)TorchInterop.DataPointer(y));
        if (Bias is not null) y.add_(Bias);
        return y;
    }

    /// <summary>A copy on <paramref name="device"/> (this instance keeps its tensors).</summary>
    public Linear To(Device device) => new(Weight.to(device), Bias?.to(device));

    public void Dispose()
    {
        Weight.Dispose();
        Bias?.Dispose();
    }
}
