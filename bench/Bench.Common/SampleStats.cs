namespace MoeServer.Bench.Common;

/// <summary>Summary statistics of a bench's repeated measurements.</summary>
public static class SampleStats
{
    /// <summary>The median (mean of the middle two for an even count); 0 for no values.</summary>
    public static double Median(IEnumerable<double> values)
    {
        var v = values.Order().ToArray();
        return v.Length == 0 ? 0 : v.Length % 2 == 1 ? v[v.Length / 2] : (v[v.Length / 2 - 1] + v[v.Length / 2]) / 2;
    }
}
