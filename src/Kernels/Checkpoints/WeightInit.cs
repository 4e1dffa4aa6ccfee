namespace MoeServer.Kernels.Checkpoints;

/// <summary>
/// Deterministic, platform-independent random numbers for generated checkpoints (SplitMix64), so the same seed
/// gives the same bytes everywhere. Each tensor gets its own stream derived from the seed and its name.
/// </summary>
public static class WeightInit
{
    public static ulong StreamSeed(long seed, string tensorName)
    {
        ulong h = 14695981039346656037UL; // FNV-1a: stable across processes, unlike string.GetHashCode.
        foreach (char c in tensorName)
        {
            h ^= c;
            h *= 1099511628211UL;
        }
        return h ^ (ulong)seed * 0x9E3779B97F4A7C15UL;
    }

    /// <summary>Fills <paramref name="dst"/> with center + uniform(-a, a) where a = std * sqrt(3).</summary>
    public static void Uniform(Span<float> dst, ulong state, double std, double center = 0)
    {
        double a = std * Math.Sqrt(3.0);
        for (int i = 0; i < dst.Length; i++)
        {
            state += 0x9E3779B97F4A7C15UL;
            ulong z = state;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            z ^= z >> 31;
            double u = (z >> 11) * (1.0 / (1UL << 53)); // [0, 1)
            dst[i] = (float)(center + (2 * u - 1) * a);
        }
    }
}
