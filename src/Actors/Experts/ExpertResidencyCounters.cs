using MoeServer.Kernels.Model;

namespace MoeServer.Actors.Experts;

/// <summary>Per-expert residency counts of one node (uses, hits, loads, evictions, bytes) and the time spent loading and
/// waiting for weights; written under the residency's lock, read lock-free by metrics scrapes.</summary>
public sealed class ExpertResidencyCounters(int numLayers, int numExperts)
{
    private readonly long[] _uses = new long[numLayers * numExperts];
    private readonly long[] _hits = new long[numLayers * numExperts];
    private readonly long[] _loads = new long[numLayers * numExperts];
    private readonly long[] _prefetchLoads = new long[numLayers * numExperts];
    private readonly long[] _evictions = new long[numLayers * numExperts];
    private long _bytes, _loadTicks, _stallTicks, _warmTicks;

    public int NumLayers { get; } = numLayers;
    public int NumExperts { get; } = numExperts;

    private int I(ExpertId id) => id.Layer * NumExperts + id.Expert;

    internal void Used(ExpertId id, bool hit)
    {
        Interlocked.Increment(ref _uses[I(id)]);
        if (hit) Interlocked.Increment(ref _hits[I(id)]);
    }

    internal void Loaded(ExpertId id, long bytes, TimeSpan took, bool prefetch)
    {
        Interlocked.Increment(ref (prefetch ? _prefetchLoads : _loads)[I(id)]);
        Interlocked.Add(ref _bytes, bytes);
        Interlocked.Add(ref _loadTicks, took.Ticks);
    }

    internal void Warmed(TimeSpan took) => Interlocked.Add(ref _warmTicks, took.Ticks);

    internal void Evicted(ExpertId id) => Interlocked.Increment(ref _evictions[I(id)]);

    internal void Stalled(ExpertId id, TimeSpan waited) => Interlocked.Add(ref _stallTicks, waited.Ticks);

    public long Uses(int layer, int expert) => Interlocked.Read(ref _uses[layer * NumExperts + expert]);
    public long Hits(int layer, int expert) => Interlocked.Read(ref _hits[layer * NumExperts + expert]);
    public long DemandLoads(int layer, int expert) => Interlocked.Read(ref _loads[layer * NumExperts + expert]);
    public long PrefetchLoads(int layer, int expert) => Interlocked.Read(ref _prefetchLoads[layer * NumExperts + expert]);
    public long Evictions(int layer, int expert) => Interlocked.Read(ref _evictions[layer * NumExperts + expert]);
    /// <summary>Bytes of expert weights loaded after warm-up (demand and prefetch).</summary>
    public long BytesLoaded => Interlocked.Read(ref _bytes);
    public TimeSpan LoadTime => TimeSpan.FromTicks(Interlocked.Read(ref _loadTicks));
    /// <summary>Time batches waited for their expert's weights (demand loads, prefetches still in flight).</summary>
    public TimeSpan StallTime => TimeSpan.FromTicks(Interlocked.Read(ref _stallTicks));
    public TimeSpan WarmUpTime => TimeSpan.FromTicks(Interlocked.Read(ref _warmTicks));
}
