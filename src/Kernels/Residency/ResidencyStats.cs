namespace MoeServer.Kernels.Residency;

/// <summary>
/// What an expert cache did. A use is a hit when the expert was resident at that moment (a prefetch that arrived in
/// time counts, and is also a prefetch hit); every load, on demand or ahead, moves one expert's weights.
/// </summary>
public sealed record ResidencyStats
{
    public long Uses { get; init; }
    public long Hits { get; init; }
    public long Misses => Uses - Hits;
    public long DemandLoads { get; init; }
    public long PrefetchLoads { get; init; }
    public long PrefetchHits { get; init; }
    /// <summary>Prefetched experts evicted again before any use.</summary>
    public long WastedPrefetches { get; init; }
    public long Evictions { get; init; }
    public long BytesLoaded { get; init; }
    public TimeSpan LoadTime { get; init; }
    /// <summary>Time uses waited for their expert's weights.</summary>
    public TimeSpan StallTime { get; init; }

    public long Loads => DemandLoads + PrefetchLoads;
    public double HitRate => Uses == 0 ? 0 : (double)Hits / Uses;

    /// <summary>1 - loads / uses: the share of uses that moved no weights. No policy beats Belady's MIN on it,
    /// prefetching or not; it is the figure compared with the bound.</summary>
    public double NoLoadRate => Uses == 0 ? 0 : 1 - (double)Loads / Uses;
}
