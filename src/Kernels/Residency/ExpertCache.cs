using MoeServer.Kernels.Model;

namespace MoeServer.Kernels.Residency;

/// <summary>
/// Which experts are resident, within a budget of <see cref="Capacity"/> experts, under a policy. Bookkeeping only:
/// the caller materializes weights when told to load and frees them when told to evict (live engine), or just counts
/// (the trace simulator). Not thread-safe; one owner (an expert node's residency actor, the simulator).
/// </summary>
public sealed class ExpertCache
{
    private readonly HashSet<ExpertId> _resident = [];
    private readonly HashSet<ExpertId> _prefetchedUnused = [];
    private readonly HashSet<ExpertId> _pinned = [];
    private long _uses, _hits, _demandLoads, _prefetchLoads, _prefetchHits, _wasted, _evictions;

    public ExpertCache(int capacity, ResidencyPolicy policy)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        Capacity = capacity;
        Policy = policy;
    }

    public int Capacity { get; }
    public ResidencyPolicy Policy { get; }
    public IReadOnlyCollection<ExpertId> Resident => _resident;
    public bool IsResident(ExpertId expert) => _resident.Contains(expert);

    /// <summary>An expert that is never evicted while pinned (operator pin, or in use by a running batch).</summary>
    public void Pin(ExpertId expert) => _pinned.Add(expert);

    public void Unpin(ExpertId expert) => _pinned.Remove(expert);

    /// <summary>
    /// One use of <paramref name="expert"/> at <paramref name="now"/>. Returns the expert to evict first (or null)
    /// and whether it must be loaded; the cache has already recorded both.
    /// </summary>
    public (bool Load, ExpertId? Evicted) Use(ExpertId expert, long now)
    {
        bool hit = _resident.Contains(expert);
        ExpertId? evicted = hit ? null : MakeRoom(now, exclude: expert); // throws before anything is counted
        _uses++;
        if (hit)
        {
            _hits++;
            if (_prefetchedUnused.Remove(expert)) _prefetchHits++;
        }
        else
        {
            _resident.Add(expert);
            _demandLoads++;
            Policy.Loaded(expert, now);
        }
        Policy.Used(expert, now);
        return (!hit, evicted);
    }

    /// <summary>
    /// Brings <paramref name="expert"/> in ahead of its use when there is room, or when the policy judges the
    /// victim needed later. Returns whether to load it and what was evicted for it.
    /// </summary>
    public (bool Load, ExpertId? Evicted) Prefetch(ExpertId expert, long now)
    {
        if (_resident.Contains(expert)) return (false, null);
        ExpertId? evicted = null;
        if (_resident.Count >= Capacity)
        {
            var candidates = Candidates(expert);
            if (candidates.Count == 0) return (false, null);
            var victim = Policy.Victim(candidates, now);
            if (!Policy.WorthPrefetching(expert, victim, now)) return (false, null);
            Evict(victim);
            evicted = victim;
        }
        _resident.Add(expert);
        _prefetchedUnused.Add(expert);
        _prefetchLoads++;
        Policy.Loaded(expert, now);
        return (true, evicted);
    }

    /// <summary>Makes an expert resident without counting a load (a node's warm start); false when there is no free room.</summary>
    public bool Admit(ExpertId expert)
    {
        if (_resident.Contains(expert)) return true;
        if (_resident.Count >= Capacity) return false;
        _resident.Add(expert);
        Policy.Loaded(expert, 0);
        return true;
    }

    /// <summary>Drops an expert (operator evict); false when it was not resident or is pinned.</summary>
    public bool Evict(ExpertId expert, bool force)
    {
        if (!_resident.Contains(expert) || (_pinned.Contains(expert) && !force)) return false;
        Evict(expert);
        return true;
    }

    public ResidencyStats Stats(long bytesPerExpert = 0, TimeSpan loadTime = default, TimeSpan stallTime = default) => new()
    {
        Uses = _uses,
        Hits = _hits,
        DemandLoads = _demandLoads,
        PrefetchLoads = _prefetchLoads,
        PrefetchHits = _prefetchHits,
        WastedPrefetches = _wasted,
        Evictions = _evictions,
        BytesLoaded = (_demandLoads + _prefetchLoads) * bytesPerExpert,
        LoadTime = loadTime,
        StallTime = stallTime,
    };

    private ExpertId? MakeRoom(long now, ExpertId exclude)
    {
        if (_resident.Count < Capacity) return null;
        var candidates = Candidates(exclude);
        if (candidates.Count == 0)
            throw new InvalidOperationException($"expert cache of {Capacity} is full of pinned experts; {exclude} cannot be loaded");
        var victim = Policy.Victim(candidates, now);
        Evict(victim);
        return victim;
    }

    private List<ExpertId> Candidates(ExpertId exclude) =>
        _resident.Where(e => !e.Equals(exclude) && !_pinned.Contains(e)).ToList();

    private void Evict(ExpertId victim)
    {
        _resident.Remove(victim);
        if (_prefetchedUnused.Remove(victim)) _wasted++;
        _evictions++;
        Policy.Evicted(victim);
    }
}
