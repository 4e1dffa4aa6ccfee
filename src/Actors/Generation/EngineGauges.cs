namespace MoeServer.Actors.Generation;

/// <summary>
/// Live counters of the engine, written by the scheduler and the step runner and read lock-free by metrics
/// scrapes (asking the scheduler would wait for the step in progress).
/// </summary>
public sealed class EngineGauges
{
    private readonly long[] _routedTokens;
    private int _running, _waiting;
    private long _kvReserved, _kvAllocated;

    public EngineGauges(int numLayers, int numExperts, long kvBudgetBytes)
    {
        NumLayers = numLayers;
        NumExperts = numExperts;
        KvBudgetBytes = kvBudgetBytes;
        _routedTokens = new long[numLayers * numExperts];
    }

    public int NumLayers { get; }
    public int NumExperts { get; }
    public long KvBudgetBytes { get; }
    public int Running => Volatile.Read(ref _running);
    public int Waiting => Volatile.Read(ref _waiting);
    /// <summary>KV-cache bytes reserved by admitted sequences (prompt + max_tokens each).</summary>
    public long KvReservedBytes => Volatile.Read(ref _kvReserved);
    /// <summary>KV-cache bytes the running sequences' caches hold now.</summary>
    public long KvAllocatedBytes => Volatile.Read(ref _kvAllocated);

    internal void SetQueue(int running, int waiting, long kvReserved, long kvAllocated)
    {
        Volatile.Write(ref _running, running);
        Volatile.Write(ref _waiting, waiting);
        Volatile.Write(ref _kvReserved, kvReserved);
        Volatile.Write(ref _kvAllocated, kvAllocated);
    }

    internal void AddRouted(int layer, int expert, int tokens) =>
        Interlocked.Add(ref _routedTokens[layer * NumExperts + expert], tokens);

    /// <summary>Tokens (prefill and decode rows) the gate has sent to an expert since the engine started.</summary>
    public long RoutedTokens(int layer, int expert) => Interlocked.Read(ref _routedTokens[layer * NumExperts + expert]);
}
