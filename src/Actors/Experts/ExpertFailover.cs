using MoeServer.Kernels.Model;

namespace MoeServer.Actors.Experts;

/// <summary>Health of a cluster member as the gateway sees it now.</summary>
public enum HostHealth
{
    Up,
    Unreachable,
    /// <summary>Not a member any more (removed after being downed, or it left).</summary>
    Gone,
}

/// <summary>
/// The gateway's own answer for experts whose node stopped answering (<c>moe.experts.failover</c>): such an expert is
/// computed here, from this node's memory-mapped checkpoint within its own budget, until a probe finds where its
/// shard lives again. Recovery is bounded by the ask timeout, not by membership (detect, down, remove, coordinator,
/// re-allocate take tens of seconds). Bookkeeping runs on the compute thread only.
/// </summary>
/// <remarks>
/// An expert goes local when its ask times out, when the node it last answered from missed a deadline for another
/// expert (a dead node's other experts need not each wait out a timeout), or when the cluster reports that node
/// unreachable or gone. It goes back to its shard when a probe (a ping through the region) or a batch reply comes
/// from a node that is up: the same node, if it was only slow, or the new owner after re-allocation.
/// </remarks>
public sealed class ExpertFailover(ExpertResidency weights, TimeSpan probeInterval) : IDisposable
{
    private readonly Dictionary<ExpertId, string> _hostOf = new();
    private readonly Dictionary<ExpertId, DateTime> _localSince = new();
    private readonly HashSet<string> _suspectNodes = new(StringComparer.Ordinal);
    private DateTime _lastProbe = DateTime.MinValue;
    private long _batches, _rows, _switches;

    public ExpertResidency Weights => weights;
    public TimeSpan ProbeInterval => probeInterval;

    /// <summary>Expert batches computed here instead of on their shard, since start.</summary>
    public long Batches => Interlocked.Read(ref _batches);
    public long Rows => Interlocked.Read(ref _rows);
    /// <summary>Times an expert went from its shard to this node.</summary>
    public long Switches => Interlocked.Read(ref _switches);
    /// <summary>Experts computed here now (written on the compute thread, read by metrics scrapes).</summary>
    public int LocalCount => Volatile.Read(ref _localCount);
    private int _localCount;

    /// <summary>Whether <paramref name="id"/> is computed here this step rather than sent to its shard.</summary>
    public bool ComputesLocally(ExpertId id, Func<string, HostHealth> health, DateTime now)
    {
        if (_localSince.ContainsKey(id)) return true;
        if (!_hostOf.TryGetValue(id, out var host)) return false;
        if (!_suspectNodes.Contains(host) && health(host) == HostHealth.Up) return false;
        GoLocal(id, now);
        return true;
    }

    /// <summary>The experts' asks timed out: they, and every expert last seen on the same nodes, go local.</summary>
    public void TimedOut(IEnumerable<ExpertId> ids, DateTime now)
    {
        foreach (var id in ids)
        {
            GoLocal(id, now);
            if (_hostOf.TryGetValue(id, out var host)) _suspectNodes.Add(host);
        }
    }

    /// <summary>The expert answered from <paramref name="node"/> (a batch reply or a probe's pong): that node is alive,
    /// and the expert is served by its shard again.</summary>
    public void Answered(ExpertId id, string node)
    {
        _hostOf[id] = node;
        _suspectNodes.Remove(node);
        if (_localSince.Remove(id)) Volatile.Write(ref _localCount, _localSince.Count);
    }

    /// <summary>Experts to probe now (every local one, at most once per probe interval).</summary>
    public IReadOnlyList<ExpertId> DueForProbe(DateTime now)
    {
        if (_localSince.Count == 0 || now - _lastProbe < probeInterval) return [];
        _lastProbe = now;
        return _localSince.Keys.ToList();
    }

    /// <summary>Since when <paramref name="id"/> has been computed here (null: it is served by its shard).</summary>
    public DateTime? LocalSince(ExpertId id) => _localSince.TryGetValue(id, out var t) ? t : null;

    /// <summary>Runs the expert's FFN over <paramref name="input"/> with this node's copy of its weights.</summary>
    public float[] Compute(ExpertId id, ActivationBlock input, long step)
    {
        var ffn = weights.Acquire(id, step);
        try
        {
            var y = ffn.Forward(input.Data, input.Rows);
            Interlocked.Increment(ref _batches);
            Interlocked.Add(ref _rows, input.Rows);
            return y;
        }
        finally
        {
            weights.Release(id);
        }
    }

    private void GoLocal(ExpertId id, DateTime now)
    {
        if (!_localSince.TryAdd(id, now)) return;
        Interlocked.Increment(ref _switches);
        Volatile.Write(ref _localCount, _localSince.Count);
    }

    public void Dispose() => weights.Dispose();
}
