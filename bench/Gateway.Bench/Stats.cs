using System.Diagnostics;

namespace MoeServer.Bench.Gateway;

/// <summary>Percentiles of a sample (linear interpolation between closest ranks); NaN when empty.</summary>
internal static class Stats
{
    public static double Percentile(IReadOnlyList<double> values, double p)
    {
        if (values.Count == 0) return double.NaN;
        var sorted = values.ToArray();
        Array.Sort(sorted);
        return PercentileSorted(sorted, p);
    }

    public static double PercentileSorted(double[] sorted, double p)
    {
        if (sorted.Length == 0) return double.NaN;
        double rank = p / 100.0 * (sorted.Length - 1);
        int lo = (int)Math.Floor(rank);
        int hi = Math.Min(sorted.Length - 1, lo + 1);
        return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo);
    }

    public static double Ms(long fromTimestamp, long toTimestamp) =>
        (toTimestamp - fromTimestamp) * 1000.0 / Stopwatch.Frequency;
}

/// <summary>p50 / p99 (and the sample size) of one latency, in milliseconds.</summary>
internal sealed record Latency(double P50, double P99, double Mean, int Samples)
{
    public static Latency Of(IReadOnlyList<double> ms) =>
        new(Stats.Percentile(ms, 50), Stats.Percentile(ms, 99), ms.Count == 0 ? double.NaN : ms.Average(), ms.Count);
}
