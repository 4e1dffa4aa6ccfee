using MoeServer.Kernels.Residency;

namespace MoeServer.Actors.Generation;

/// <summary>
/// Live counters of the engine, written by the scheduler and the step runner and read lock-free by metrics
/// scrapes (asking the scheduler would wait for the step in progress).
/// </summary>
public sealed class EngineGauges
{
    private readonly long[] _routedTokens;
    private int _running, _waiting, _generationActors, _openStreams;
    private long _kvReserved, _kvAllocated;

    public EngineGauges(int numLayers, int numExperts, long kvBudgetBytes)
    {
        NumLayers = numLayers;
        NumExperts = numExperts;
        KvBudgetBytes = kvBudgetBytes;
        _routedTokens = new long[numLayers * numExperts];
        _predictions = new long[2, numLayers];
        _predictionHits = new long[2, numLayers];
    }

    private readonly long[,] _predictions, _predictionHits;

    /// <summary>Recall of the speculative gates per lookahead distance (layer-wise models).</summary>
    public SpeculationRecall Speculation { get; } = new();

    public int NumLayers { get; }
    public int NumExperts { get; }
    public long KvBudgetBytes { get; }
    public int Running => Volatile.Read(ref _running);
    public int Waiting => Volatile.Read(ref _waiting);
    /// <summary>KV-cache bytes reserved by admitted sequences (prompt + max_tokens each).</summary>
    public long KvReservedBytes => Volatile.Read(ref _kvReserved);
    /// <summary>KV-cache bytes the running sequences' caches hold now.</summary>
    public long KvAllocatedBytes => Volatile.Read(ref _kvAllocated);

    /// <summary>Generation actors alive: one per request from its submission until it stopped (its final chunk
    /// written, or handed to the stream, or refused).</summary>
    public int GenerationActors => Volatile.Read(ref _generationActors);

    /// <summary>Request token streams whose writer has not completed yet (the buffer of a client that left is
    /// collected with its stream once completed).</summary>
    public int OpenStreams => Volatile.Read(ref _openStreams);

    internal void GenerationActorStarted() => Interlocked.Increment(ref _generationActors);

    internal void GenerationActorStopped() => Interlocked.Decrement(ref _generationActors);

    internal void StreamOpened() => Interlocked.Increment(ref _openStreams);

    internal void StreamCompleted() => Interlocked.Decrement(ref _openStreams);

    internal void SetQueue(int running, int waiting, long kvReserved, long kvAllocated)
    {
        Volatile.Write(ref _running, running);
        Volatile.Write(ref _waiting, waiting);
        Volatile.Write(ref _kvReserved, kvReserved);
        Volatile.Write(ref _kvAllocated, kvAllocated);
    }

    private long _prefixLookups, _prefixHits, _prefixTokens, _prefixBytes;

    /// <summary>Prefix cache: admissions that looked, that reused a prefix, prompt tokens not prefilled again, bytes kept.</summary>
    public (long Lookups, long Hits, long TokensReused, long Bytes) PrefixCache =>
        (Volatile.Read(ref _prefixLookups), Volatile.Read(ref _prefixHits), Volatile.Read(ref _prefixTokens), Volatile.Read(ref _prefixBytes));

    internal void SetPrefixCache(long lookups, long hits, long tokensReused, long bytes)
    {
        Volatile.Write(ref _prefixLookups, lookups);
        Volatile.Write(ref _prefixHits, hits);
        Volatile.Write(ref _prefixTokens, tokensReused);
        Volatile.Write(ref _prefixBytes, bytes);
    }

    internal void AddRouted(int layer, int expert, int tokens) =>
        Interlocked.Add(ref _routedTokens[layer * NumExperts + expert], tokens);

    /// <summary>A decode row's experts at <paramref name="layer"/> were known before its step (exact pre-gating) or
    /// predicted (layer-wise: token gates or keep-last); whether that matched where the gate sent it.</summary>
    internal void AddPrediction(int layer, bool exact, bool correct)
    {
        int k = exact ? 1 : 0;
        Interlocked.Increment(ref _predictions[k, layer]);
        if (correct) Interlocked.Increment(ref _predictionHits[k, layer]);
    }

    public long Predictions(int layer, bool exact) => Interlocked.Read(ref _predictions[exact ? 1 : 0, layer]);

    public long PredictionHits(int layer, bool exact) => Interlocked.Read(ref _predictionHits[exact ? 1 : 0, layer]);

    /// <summary>How often the layer-wise prediction of a decode row's experts held exactly at a layer so far (0 before any).</summary>
    public double PredictionHitRate(int layer)
    {
        long n = Predictions(layer, exact: false);
        return n == 0 ? 0 : (double)PredictionHits(layer, exact: false) / n;
    }

    /// <summary>Tokens (prefill and decode rows) the gate has sent to an expert since the engine started.</summary>
    public long RoutedTokens(int layer, int expert) => Interlocked.Read(ref _routedTokens[layer * NumExperts + expert]);
}
