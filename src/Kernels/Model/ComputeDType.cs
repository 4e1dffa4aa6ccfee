namespace MoeServer.Kernels.Model;

/// <summary>
/// How weights are held in memory. Activations, norms, router and attention math are always fp32;
/// bf16 weights are multiplied with fp32 accumulation.
/// </summary>
public enum WeightPrecision
{
    BF16,
    F32,
}
