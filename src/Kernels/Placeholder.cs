namespace MoeServer.Kernels;
public static class TorchProbe { public static float Sum() { using var t = TorchSharp.torch.ones(3, 3); return t.sum().item<float>(); } }
