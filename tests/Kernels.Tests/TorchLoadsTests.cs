using TorchSharp;

namespace MoeServer.Kernels.Tests;

public class TorchLoadsTests
{
    [Fact]
    public void A_tensor_operation_runs_on_this_machine()
    {
        // Fails with a DllNotFoundException / GLIBCXX error if the build step did not patch libLibTorchSharp.so.
        using var a = torch.ones(3, 3);
        using var b = torch.matmul(a, a);
        Assert.Equal(27f, b.sum().item<float>());
    }
}
