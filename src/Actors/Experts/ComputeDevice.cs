using TorchSharp;

namespace MoeServer.Actors.Experts;

/// <summary>Parses the per-node <c>moe.node.device</c> setting and checks this libtorch build can use it.</summary>
public static class ComputeDevice
{
    public static torch.Device Parse(string device)
    {
        string d = device.Trim().ToLowerInvariant();
        if (d == "cpu") return torch.CPU;
        if (d.StartsWith("cuda", StringComparison.Ordinal))
        {
            if (!torch.cuda.is_available())
                throw new InvalidOperationException(
                    $"moe.node.device = {device}, but this libtorch build has no CUDA support (the package registry " +
                    "serves only libtorch-cpu); see README: Running on a GPU node");
            int index = d == "cuda" ? 0 : int.Parse(d.AsSpan("cuda:".Length), provider: System.Globalization.CultureInfo.InvariantCulture);
            if (index < 0 || index >= torch.cuda.device_count())
                throw new InvalidOperationException($"moe.node.device = {device}: this machine has {torch.cuda.device_count()} CUDA devices");
            return new torch.Device(DeviceType.CUDA, index);
        }
        throw new ArgumentException($"moe.node.device: unknown device '{device}' (expected cpu or cuda:N)");
    }
}
