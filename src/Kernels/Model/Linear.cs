using TorchSharp;
using static TorchSharp.torch;

namespace MoeServer.Kernels.Model;

/// <summary>
/// y = x W^T (+ b) with W [out, in] held in the model's weight precision; x and y are fp32.
/// bf16 weights multiply a bf16 copy of x with fp32 accumulation inside the matmul.
/// </summary>
public sealed class Linear : IDisposable
{
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
        if (Weight.dtype == ScalarType.Float32)
            return torch.nn.functional.linear(x, Weight, Bias);
        using var xb = x.to(Weight.dtype);
        using var yb = torch.nn.functional.linear(xb, Weight);
        var y = yb.to(ScalarType.Float32);
        if (Bias is not null) y.add_(Bias);
        return y;
    }

    public void Dispose()
    {
        Weight.Dispose();
        Bias?.Dispose();
    }
}
