using MoeServer.Kernels.Model;
namespace MoeServer.Actors.Experts;

/// <summary>
/// What the expert entities of this node did, per expert: batches, rows and FFN time. Written by the entities (on
/// the compute thread), read lock-free by metrics scrapes.
/// </summary>
public sealed class ExpertWorkCounters(int numLayers, int numExperts)
{
    private readonly long[] _batches = new long[numLayers * numExperts];
    private readonly long[] _rows = new long[numLayers * numExperts];
    private readonly long[] _computeTicks = new long[numLayers * numExperts];

    public int NumLayers { get; } = numLayers;
    public int NumExperts { get; } = numExperts;
    internal void Ran(ExpertId id, int rows, TimeSpan took)
    {
        int i = id.Layer * NumExperts + id.Expert;
        Interlocked.Increment(ref _batches[i]);
        Interlocked.Add(ref _rows[i], rows);
        Interlocked.Add(ref _computeTicks[i], took.Ticks);
    }

    public long Batches(int layer, int expert) => Interlocked.Read(ref _batches[layer * NumExperts + expert]);

    public long Rows(int layer, int expert) => Interlocked.Read(ref _rows[layer * NumExperts + expert]);

    public TimeSpan ComputeTime(int layer, int expert) => TimeSpan.FromTicks(Interlocked.Read(ref _computeTicks[layer * NumExperts + expert]));
}
