namespace MoeServer.Kernels.Tests;

public class TorchLoadsTests
{
    [Fact]
    public void A_tensor_operation_runs_on_this_machine()
    {
        Assert.Equal(9f, TorchProbe.Sum());
    }
}
