using MoeServer.Kernels.Model;
using static TorchSharp.torch;

namespace MoeServer.Kernels.Tests.Support;

/// <summary>Bitwise tensor comparison: dtype, shape and raw bytes (torch.equal would call -0 and 0 equal).</summary>
public static class TensorBytes
{
    public static unsafe byte[] Of(Tensor t)
    {
        using var c = t.contiguous();
        return new ReadOnlySpan<byte>(TorchInterop.DataPointer(c), checked((int)(c.numel() * c.element_size()))).ToArray();
    }

    public static void AssertSame(Tensor? expected, Tensor? actual, string what)
    {
        if (expected is null || actual is null)
        {
            Assert.True(expected is null && actual is null, $"{what}: one side is missing");
            return;
        }
        Assert.True(expected.dtype == actual.dtype, $"{what}: dtype {actual.dtype}, expected {expected.dtype}");
        Assert.True(expected.shape.SequenceEqual(actual.shape), $"{what}: shape [{string.Join(", ", actual.shape)}], expected [{string.Join(", ", expected.shape)}]");
        Assert.True(Of(expected).AsSpan().SequenceEqual(Of(actual)), $"{what}: bytes differ");
    }

    public static void AssertSame(ExpertFfn? expected, ExpertFfn? actual, string what)
    {
        if (expected is null || actual is null)
        {
            Assert.True(expected is null && actual is null, $"{what}: one side is missing");
            return;
        }
        AssertSame(expected.GateUp.Weight, actual.GateUp.Weight, what + " gate|up");
        AssertSame(expected.Down.Weight, actual.Down.Weight, what + " down");
    }
}
