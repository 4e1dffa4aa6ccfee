using System.Diagnostics;
using MoeServer.Kernels.Model;
using MoeServer.Kernels.Residency;

namespace MoeServer.Actors.Experts;

/// <summary>
/// Which expert weights this node keeps materialized, within its budget (<c>moe.experts.residency</c>). The expert
/// entities ask for their weights per batch (<see cref="Acquire"/>): resident, arriving from a prefetch (waited
/// for), or loaded now from the checkpoint, evicting the victim the policy names (its tensors are freed). The
/// router's announcements (<see cref="Announce"/>) feed the same <see cref="PlanBook"/> the trace simulator uses, and
/// a background loader prefetches the announced experts while the compute thread runs others.
/// </summary>
public sealed class ExpertResidency : IDisposable
{
    private readonly ExpertWeightSource _source;
    private readonly object _gate = new();
    private readonly ExpertCache _cache;
    private readonly PlanBook _book;
    private readonly Dictionary<ExpertId, ExpertFfn> _weights = [];
    private readonly Dictionary<ExpertId, TaskCompletionSource<bool>> _inFlight = [];
    private readonly Dictionary<ExpertId, int> _inUse = [];
    private readonly Dictionary<ExpertId, string> _pinnedByOperator = [];
    private readonly HashSet<ExpertId> _hosted = [];
    private readonly ExpertResidencyCounters _counters;
    private readonly Thread? _loader;
    private readonly SemaphoreSlim _wake = new(0);
    private volatile bool _stopping;

    public ExpertResidency(ExpertWeightSource source, ExpertResidencyOptions options, long expertBytes)
    {
        _source = source;
        Options = options;
        var cfg = source.Config;
        int total = Enumerable.Range(0, cfg.NumLayers).Count(cfg.IsSparseLayer) * cfg.NumExperts;
        ExpertBytes = expertBytes;
        Capacity = options.CapacityFor(total, expertBytes);
        _book = new PlanBook(cfg.NumLayers);
        _cache = new ExpertCache(Capacity, ResidencyPolicy.Create(options.Policy, _book));
        _counters = new ExpertResidencyCounters(cfg.NumLayers, cfg.NumExperts);
        if (options.Prefetch && options.PrefetchDepth > 0 && _cache.Policy is LookaheadPolicy)
        {
            _loader = new Thread(PrefetchLoop) { IsBackground = true, Name = "expert-prefetch" };
            _loader.Start();
        }
    }

    public ExpertResidencyOptions Options { get; }
    /// <summary>Most experts resident at once on this node.</summary>
    public int Capacity { get; }
    /// <summary>Bytes of one expert's weights as materialized here.</summary>
    public long ExpertBytes { get; }
    public ExpertResidencyCounters Counters => _counters;

    public int ResidentCount
    {
        get
        {
            lock (_gate) return _weights.Count;
        }
    }

    public bool IsResident(ExpertId id)
    {
        lock (_gate) return _weights.ContainsKey(id);
    }

    public IReadOnlyList<ExpertId> Resident()
    {
        lock (_gate) return _weights.Keys.OrderBy(e => e.Layer).ThenBy(e => e.Expert).ToList();
    }

    /// <summary>Experts pinned by an operator, ascending.</summary>
    public IReadOnlyList<ExpertId> Pinned()
    {
        lock (_gate) return _pinnedByOperator.Keys.OrderBy(e => e.Layer).ThenBy(e => e.Expert).ToList();
    }

    /// <summary>Whether this node hosts the expert's entity now.</summary>
    public bool Hosts(ExpertId id)
    {
        lock (_gate) return _hosted.Contains(id);
    }

    /// <summary>The cache's own counts (hits, loads, prefetch hits, wasted prefetches, evictions), with bytes and times.</summary>
    public ResidencyStats Stats()
    {
        lock (_gate) return _cache.Stats(ExpertBytes, _counters.LoadTime, _counters.StallTime);
    }

    /// <summary>An entity started here: load its weights now if the budget has room (warm start), else read them once to
    /// check the checkpoint and let them go. Throws naming the file and tensor when they cannot be read.</summary>
    public void Register(ExpertId id)
    {
        lock (_gate)
        {
            if (_weights.ContainsKey(id) || _inFlight.ContainsKey(id))
            {
                _hosted.Add(id);
                return;
            }
        }
        var (ffn, took) = _source.Load(id, dropAfter: Options.Tier == StorageTier.Disk);
        lock (_gate)
        {
            _hosted.Add(id);
            if (_weights.ContainsKey(id) || !_cache.Admit(id))
            {
                ffn.Dispose();
                return;
            }
            _weights[id] = ffn;
            _counters.Warmed(took);
        }
    }

    /// <summary>The weights of <paramref name="id"/> for one batch of <paramref name="step"/>, kept resident until
    /// <see cref="Release"/>. A miss loads them here (the caller waits: stall time); a prefetch in flight is waited for.</summary>
    public ExpertFfn Acquire(ExpertId id, long step)
    {
        long t0 = Stopwatch.GetTimestamp();
        TaskCompletionSource<bool>? arriving;
        ExpertId? evicted;
        bool load;
        lock (_gate)
        {
            long now = _book.Consume(id, step);
            bool wasResident = _cache.IsResident(id);
            (load, evicted) = _cache.Use(id, now);
            _inUse[id] = _inUse.GetValueOrDefault(id) + 1;
            _cache.Pin(id);
            if (evicted is { } v) FreeLocked(v);
            _counters.Used(id, hit: wasResident);
            _inFlight.TryGetValue(id, out arriving);
        }
        Wake(); // the plan moved on: the loader may prefetch what comes next
        try
        {
            if (load) return LoadNow(id, t0, prefetch: false);
            if (arriving is not null)
            {
                arriving.Task.GetAwaiter().GetResult();
                lock (_gate)
                {
                    _counters.Stalled(id, Stopwatch.GetElapsedTime(t0));
                    if (_weights.TryGetValue(id, out var w)) return w;
                }
                return LoadNow(id, t0, prefetch: false); // the prefetch failed: load it here, reporting the error
            }
            lock (_gate)
            {
                if (_weights.TryGetValue(id, out var w)) return w;
            }
            return LoadNow(id, t0, prefetch: false);
        }
        catch
        {
            Release(id);
            throw;
        }
    }

    /// <summary>The batch that acquired <paramref name="id"/> is done with it.</summary>
    public void Release(ExpertId id)
    {
        lock (_gate)
        {
            int n = _inUse.GetValueOrDefault(id) - 1;
            if (n > 0)
            {
                _inUse[id] = n;
                return;
            }
            _inUse.Remove(id);
            if (!_pinnedByOperator.ContainsKey(id)) _cache.Unpin(id);
        }
    }

    /// <summary>The router expects these experts to run in <paramref name="step"/> at <paramref name="layer"/>; the
    /// ones this node hosts go into its plan.</summary>
    public void Announce(long step, int layer, IEnumerable<int> experts)
    {
        if (_cache.Policy is not LookaheadPolicy) return; // only lookahead plans; lru and lfu look back
        lock (_gate) _book.Announce(step, layer, experts.Where(e => _hosted.Contains(new ExpertId(layer, e))));
        Wake();
    }

    /// <summary>The expert's entity left this node (its shard moved, or the node stops): its weights are freed here.</summary>
    public void Unregister(ExpertId id)
    {
        lock (_gate)
        {
            _hosted.Remove(id);
            if (_inUse.ContainsKey(id)) return;
            _pinnedByOperator.Remove(id);
            _cache.Unpin(id);
            if (_cache.Evict(id, force: true)) FreeLocked(id);
        }
    }

    /// <summary>Keeps an expert resident until <see cref="Unpin"/> (operators); loads it if needed.</summary>
    public void Pin(ExpertId id, string reason)
    {
        var w = Acquire(id, Math.Max(0, _book.Now / _book.Stride));
        lock (_gate)
        {
            _pinnedByOperator[id] = reason;
            _cache.Pin(id);
        }
        Release(id);
        GC.KeepAlive(w);
    }

    public void Unpin(ExpertId id)
    {
        lock (_gate)
        {
            _pinnedByOperator.Remove(id);
            if (!_inUse.ContainsKey(id)) _cache.Unpin(id);
        }
    }

    /// <summary>Frees an expert's weights now (operator evict, or its entity moved away); false when not resident or in use.</summary>
    public bool Evict(ExpertId id)
    {
        lock (_gate)
        {
            if (_inUse.ContainsKey(id) || _pinnedByOperator.ContainsKey(id)) return false;
            if (!_cache.Evict(id, force: false)) return false;
            FreeLocked(id);
            return true;
        }
    }

    private ExpertFfn LoadNow(ExpertId id, long t0, bool prefetch)
    {
        var (ffn, took) = _source.Load(id, dropAfter: Options.Tier == StorageTier.Disk);
        lock (_gate)
        {
            if (_weights.Remove(id, out var old)) old.Dispose();
            _weights[id] = ffn;
            _counters.Loaded(id, ExpertBytes, took, prefetch);
            if (!prefetch) _counters.Stalled(id, Stopwatch.GetElapsedTime(t0));
            return ffn;
        }
    }

    private void FreeLocked(ExpertId id)
    {
        if (_weights.Remove(id, out var w)) w.Dispose();
        _counters.Evicted(id);
    }

    /// <summary>Signals the loader, if there is one; one pending signal is enough (the loader drains the plan each time),
    /// so the count never grows with the number of batches.</summary>
    private void Wake()
    {
        if (_loader is not null && _wake.CurrentCount == 0) _wake.Release();
    }

    /// <summary>Loads announced experts ahead of their use, one at a time (a single copy engine), while the policy
    /// judges each worth its victim.</summary>
    private void PrefetchLoop()
    {
        while (!_stopping)
        {
            _wake.Wait(TimeSpan.FromMilliseconds(200));
            while (!_stopping)
            {
                ExpertId next;
                TaskCompletionSource<bool> done;
                lock (_gate)
                {
                    ExpertId? candidate = null;
                    foreach (var (_, e) in _book.Upcoming(_book.Now, Options.PrefetchDepth))
                    {
                        if (_cache.IsResident(e)) continue;
                        candidate = e;
                        break;
                    }
                    if (candidate is not { } c) break;
                    next = c;
                    var (load, evicted) = _cache.Prefetch(next, _book.Now);
                    if (!load) break;
                    if (evicted is { } v) FreeLocked(v);
                    done = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
                    _inFlight[next] = done;
                }
                try
                {
                    var (ffn, took) = _source.Load(next, dropAfter: Options.Tier == StorageTier.Disk);
                    lock (_gate)
                    {
                        if (_cache.IsResident(next) && !_weights.ContainsKey(next))
                        {
                            _weights[next] = ffn;
                            _counters.Loaded(next, ExpertBytes, took, prefetch: true);
                        }
                        else
                        {
                            ffn.Dispose(); // evicted again while loading
                        }
                    }
                }
                catch (Exception)
                {
                    // Acquire loads it itself and reports the error to the batch.
                    lock (_gate) _cache.Evict(next, force: true);
                }
                finally
                {
                    lock (_gate) _inFlight.Remove(next);
                    done.TrySetResult(true);
                }
            }
        }
    }

    public void Dispose()
    {
        _stopping = true;
        _wake.Release();
        _loader?.Join(TimeSpan.FromSeconds(5));
        lock (_gate)
        {
            foreach (var w in _weights.Values) w.Dispose();
            _weights.Clear();
        }
        _wake.Dispose();
    }
}
