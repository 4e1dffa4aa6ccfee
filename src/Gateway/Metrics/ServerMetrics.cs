using MoeServer.Actors.Generation;
using MoeServer.Kernels.Generation;
using Prometheus;

namespace MoeServer.Gateway.Metrics;

/// <summary>
/// A node's Prometheus metrics (prometheus-net, one registry per server so several servers can share a process).
/// Gateways: latency histograms recorded per generation, request and token counters, and gauges read from the
/// engine's live counters at every scrape. Nodes hosting experts: per-expert batches, rows and FFN time, and the
/// number of experts resident.
/// </summary>
public sealed class ServerMetrics
{
    private static readonly double[] LatencyBuckets =
        [0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80];
    private static readonly double[] RequestBuckets = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 60, 120, 300, 600];

    private readonly Histogram? _ttft, _itl, _e2e, _queue;
    private readonly Counter? _promptTokens, _generationTokens, _finished, _routed;
    private readonly Gauge? _generationActors, _openStreams, _apiRequests;
    private int _apiRequestsOpen;
    private readonly Gauge? _running, _waiting, _kvUsage, _kvReserved, _kvAllocated, _kvBudget, _recall, _prefixBytes;
    private readonly Counter? _prefixLookups, _prefixHits, _prefixTokens;
    private readonly Counter? _predictions, _predictionHits;

    public ServerMetrics(MoeEngine? engine, Actors.Experts.ExpertWorkCounters? experts = null, Actors.Experts.ExpertResidency? residency = null,
        Actors.Experts.ExpertFailover? failover = null)
    {
        Registry = Prometheus.Metrics.NewCustomRegistry();
        var f = Prometheus.Metrics.WithCustomRegistry(Registry);
        if (engine is not null)
        {
            _ttft = f.CreateHistogram("moe_time_to_first_token_seconds", "Time from request arrival to its first generated token.",
                new HistogramConfiguration { Buckets = LatencyBuckets });
            _itl = f.CreateHistogram("moe_inter_token_latency_seconds", "Time between successive generated tokens of a request.",
                new HistogramConfiguration { Buckets = LatencyBuckets });
            _e2e = f.CreateHistogram("moe_e2e_request_latency_seconds", "Time from request arrival to its last token.",
                new HistogramConfiguration { Buckets = RequestBuckets });
            _queue = f.CreateHistogram("moe_request_queue_time_seconds", "Time a request waited for a batch slot.",
                new HistogramConfiguration { Buckets = LatencyBuckets });
            _promptTokens = f.CreateCounter("moe_prompt_tokens_total", "Prompt tokens of finished generations.");
            _generationTokens = f.CreateCounter("moe_generation_tokens_total", "Generated tokens of finished generations.");
            _finished = f.CreateCounter("moe_request_finished_total", "Finished generations by finish reason.",
                new CounterConfiguration { LabelNames = ["finish_reason"] });
            _routed = f.CreateCounter("moe_expert_routed_tokens_total", "Tokens the gate routed to each expert (prefill and decode).",
                new CounterConfiguration { LabelNames = ["layer", "expert"] });
            _running = f.CreateGauge("moe_requests_running", "Generations in the running batch.");
            _waiting = f.CreateGauge("moe_requests_waiting", "Generations waiting for a batch slot.");
            _generationActors = f.CreateGauge("moe_generation_actors", "Generation actors alive (one per request, from submission until its stream is written).");
            _openStreams = f.CreateGauge("moe_request_streams_open", "Request token streams whose writer has not completed.");
            _apiRequests = f.CreateGauge("moe_api_requests_open", "HTTP and hub requests holding admitted engine streams (between admission and the end of their response).");
            _kvUsage = f.CreateGauge("moe_kv_cache_usage_ratio", "KV-cache memory reserved by admitted generations, as a fraction of the budget.");
            _kvReserved = f.CreateGauge("moe_kv_cache_reserved_bytes", "KV-cache bytes reserved by admitted generations (prompt + max_tokens each).");
            _kvAllocated = f.CreateGauge("moe_kv_cache_allocated_bytes", "KV-cache bytes the running generations hold now.");
            _kvBudget = f.CreateGauge("moe_kv_cache_budget_bytes", "KV-cache budget of the engine.");
            _predictions = f.CreateCounter("moe_pregate_predictions_total",
                "Decode rows whose experts were known before their step, per layer: exact (pre-gated router) or predicted (layer-wise: token gates or keep-last).",
                new CounterConfiguration { LabelNames = ["kind", "layer"] });
            _predictionHits = f.CreateCounter("moe_pregate_correct_total", "Of those, rows routed exactly to the experts known or predicted.",
                new CounterConfiguration { LabelNames = ["kind", "layer"] });
            _prefixLookups = f.CreateCounter("moe_prefix_cache_lookups_total", "Admitted generations that looked for a cached prompt prefix (moe.scheduler.prefix-cache).");
            _prefixHits = f.CreateCounter("moe_prefix_cache_hits_total", "Admitted generations that reused a cached prompt prefix.");
            _prefixTokens = f.CreateCounter("moe_prefix_cache_reused_tokens_total", "Prompt tokens whose keys/values were copied from the prefix cache instead of prefilled.");
            _prefixBytes = f.CreateGauge("moe_prefix_cache_bytes", "Bytes of keys/values the prefix cache holds.");
            _recall = f.CreateGauge("moe_speculation_recall", "Speculative lookahead gates (layer-wise models): recall per distance, per token and per step's expert set.",
                new GaugeConfiguration { LabelNames = ["distance", "kind"] });
            Registry.AddBeforeCollectCallback(() => ReadEngine(engine.Gauges));
        }
        if (residency is not null) AddResidency(f, Registry, residency);
        if (failover is not null) AddFailover(f, Registry, failover);
        if (experts is not null)
        {
            var batches = f.CreateCounter("moe_expert_batches_total", "Expert batches this node ran, per expert.",
                new CounterConfiguration { LabelNames = ["layer", "expert"] });
            var rows = f.CreateCounter("moe_expert_rows_total", "Rows (tokens) this node's experts ran, per expert.",
                new CounterConfiguration { LabelNames = ["layer", "expert"] });
            var seconds = f.CreateCounter("moe_expert_compute_seconds_total", "FFN time of this node's experts, per expert.",
                new CounterConfiguration { LabelNames = ["layer", "expert"] });
            Registry.AddBeforeCollectCallback(() =>
            {
                for (int l = 0; l < experts.NumLayers; l++)
                {
                    for (int e = 0; e < experts.NumExperts; e++)
                    {
                        long n = experts.Batches(l, e);
                        if (n == 0) continue;
                        batches.WithLabels(Label(l), Label(e)).IncTo(n);
                        rows.WithLabels(Label(l), Label(e)).IncTo(experts.Rows(l, e));
                        seconds.WithLabels(Label(l), Label(e)).IncTo(experts.ComputeTime(l, e).TotalSeconds);
                    }
                }
            });
        }
    }

    /// <summary>Experts this gateway computes itself while their node does not answer (moe.experts.failover).</summary>
    private static void AddFailover(MetricFactory f, CollectorRegistry registry, Actors.Experts.ExpertFailover failover)
    {
        var active = f.CreateGauge("moe_expert_failover_experts", "Experts this gateway computes itself now, because their node did not answer.");
        var batches = f.CreateCounter("moe_expert_failover_batches_total", "Expert batches this gateway computed itself instead of on their shard.");
        var rows = f.CreateCounter("moe_expert_failover_rows_total", "Rows (tokens) of those batches.");
        var switches = f.CreateCounter("moe_expert_failover_switches_total", "Times an expert went from its shard to this gateway.");
        var resident = f.CreateGauge("moe_expert_failover_resident_experts", "Experts whose weights this gateway holds for failover now.");
        registry.AddBeforeCollectCallback(() =>
        {
            active.Set(failover.LocalCount);
            batches.IncTo(failover.Batches);
            rows.IncTo(failover.Rows);
            switches.IncTo(failover.Switches);
            resident.Set(failover.Weights.ResidentCount);
        });
    }

    /// <summary>The node's expert residency: budget, what is resident, hit ratio, loads, evictions, bytes, stall time
    /// (totals and per expert).</summary>
    private static void AddResidency(MetricFactory f, CollectorRegistry registry, Actors.Experts.ExpertResidency r)
    {
        var budget = f.CreateGauge("moe_expert_cache_budget_experts", "Experts this node may keep resident (moe.experts.residency.budget).");
        var budgetBytes = f.CreateGauge("moe_expert_cache_budget_bytes", "The budget in bytes of expert weights.");
        var resident = f.CreateGauge("moe_experts_resident", "Experts whose weights are materialized on this node now.");
        var residentBytes = f.CreateGauge("moe_expert_cache_resident_bytes", "Bytes of expert weights materialized on this node now.");
        var hitRatio = f.CreateGauge("moe_expert_cache_hit_ratio", "Expert uses whose weights were resident or arriving from a prefetch, since start.");
        var hits = f.CreateCounter("moe_expert_cache_hits_total", "Expert uses whose weights were resident (or a prefetch was in flight).");
        var misses = f.CreateCounter("moe_expert_cache_misses_total", "Expert uses that loaded the weights on demand.");
        var loads = f.CreateCounter("moe_expert_cache_loads_total", "Expert weight loads by kind.", new CounterConfiguration { LabelNames = ["kind"] });
        var prefetchHits = f.CreateCounter("moe_expert_cache_prefetch_hits_total", "Uses served by a prefetched expert.");
        var wasted = f.CreateCounter("moe_expert_cache_prefetch_wasted_total", "Prefetched experts evicted before any use.");
        var evictions = f.CreateCounter("moe_expert_cache_evictions_total", "Experts evicted (weights freed).");
        var bytes = f.CreateCounter("moe_expert_cache_loaded_bytes_total", "Bytes of expert weights loaded after warm-up.");
        var stall = f.CreateCounter("moe_expert_cache_stall_seconds_total", "Time expert batches waited for their weights.");
        var load = f.CreateCounter("moe_expert_cache_load_seconds_total", "Time spent loading expert weights (demand and prefetch).");
        var perExpert = f.CreateCounter("moe_expert_cache_expert_events_total", "Per expert: uses, hits, demand loads, prefetch loads, evictions.",
            new CounterConfiguration { LabelNames = ["layer", "expert", "event"] });
        budget.Set(r.Capacity);
        budgetBytes.Set(r.Capacity * (double)r.ExpertBytes);
        registry.AddBeforeCollectCallback(() =>
        {
            var s = r.Stats();
            int n = r.ResidentCount;
            resident.Set(n);
            residentBytes.Set(n * (double)r.ExpertBytes);
            hitRatio.Set(s.HitRate);
            hits.IncTo(s.Hits);
            misses.IncTo(s.Misses);
            loads.WithLabels("demand").IncTo(s.DemandLoads);
            loads.WithLabels("prefetch").IncTo(s.PrefetchLoads);
            prefetchHits.IncTo(s.PrefetchHits);
            wasted.IncTo(s.WastedPrefetches);
            evictions.IncTo(s.Evictions);
            var c = r.Counters;
            bytes.IncTo(c.BytesLoaded);
            stall.IncTo(c.StallTime.TotalSeconds);
            load.IncTo(c.LoadTime.TotalSeconds);
            for (int l = 0; l < c.NumLayers; l++)
            {
                for (int e = 0; e < c.NumExperts; e++)
                {
                    if (c.Uses(l, e) == 0 && c.Evictions(l, e) == 0) continue;
                    perExpert.WithLabels(Label(l), Label(e), "use").IncTo(c.Uses(l, e));
                    perExpert.WithLabels(Label(l), Label(e), "hit").IncTo(c.Hits(l, e));
                    perExpert.WithLabels(Label(l), Label(e), "demand_load").IncTo(c.DemandLoads(l, e));
                    perExpert.WithLabels(Label(l), Label(e), "prefetch_load").IncTo(c.PrefetchLoads(l, e));
                    perExpert.WithLabels(Label(l), Label(e), "eviction").IncTo(c.Evictions(l, e));
                }
            }
        });
    }

    public CollectorRegistry Registry { get; }

    private void ReadEngine(EngineGauges g)
    {
        _running!.Set(g.Running);
        _generationActors!.Set(g.GenerationActors);
        _openStreams!.Set(g.OpenStreams);
        _apiRequests!.Set(Volatile.Read(ref _apiRequestsOpen));
        _waiting!.Set(g.Waiting);
        _kvReserved!.Set(g.KvReservedBytes);
        _kvAllocated!.Set(g.KvAllocatedBytes);
        _kvBudget!.Set(g.KvBudgetBytes);
        _kvUsage!.Set(g.KvBudgetBytes > 0 ? (double)g.KvReservedBytes / g.KvBudgetBytes : 0);
        var prefix = g.PrefixCache;
        _prefixLookups!.IncTo(prefix.Lookups);
        _prefixHits!.IncTo(prefix.Hits);
        _prefixTokens!.IncTo(prefix.TokensReused);
        _prefixBytes!.Set(prefix.Bytes);
        for (int l = 0; l < g.NumLayers; l++)
        {
            for (int e = 0; e < g.NumExperts; e++)
            {
                long n = g.RoutedTokens(l, e);
                if (n > 0) _routed!.WithLabels(Label(l), Label(e)).IncTo(n);
            }
            foreach (bool exact in new[] { true, false })
            {
                long p = g.Predictions(l, exact);
                if (p == 0) continue;
                string kind = exact ? "exact" : "predicted";
                _predictions!.WithLabels(kind, Label(l)).IncTo(p);
                _predictionHits!.WithLabels(kind, Label(l)).IncTo(g.PredictionHits(l, exact));
            }
        }
        foreach (var r in g.Speculation.Snapshot())
        {
            _recall!.WithLabels(Label(r.Distance), "token").Set(r.TokenRecall);
            _recall!.WithLabels(Label(r.Distance), "set").Set(r.SetRecall);
        }
    }

    private static string Label(int i) => i.ToString(System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>Requests (HTTP or hub) holding admitted engine streams now.</summary>
    public int ApiRequestsOpen => Volatile.Read(ref _apiRequestsOpen);

    internal void ApiRequestOpened() => Interlocked.Increment(ref _apiRequestsOpen);

    internal void ApiRequestClosed() => Interlocked.Decrement(ref _apiRequestsOpen);

    public void FirstToken(TimeSpan sinceArrival) => _ttft?.Observe(sinceArrival.TotalSeconds);

    public void InterToken(TimeSpan gap) => _itl?.Observe(gap.TotalSeconds);

    public void Queued(TimeSpan wait) => _queue?.Observe(wait.TotalSeconds);

    public void Finished(TokenChunk final, TimeSpan sinceArrival)
    {
        _e2e?.Observe(sinceArrival.TotalSeconds);
        _finished?.WithLabels((final.FinishReason ?? FinishReason.Error).ToString().ToLowerInvariant()).Inc();
        if (final.Usage is { } u)
        {
            _promptTokens?.Inc(u.PromptTokens);
            _generationTokens?.Inc(u.CompletionTokens);
        }
    }

    /// <summary>Writes every metric in the Prometheus text format.</summary>
    public Task WriteAsync(Stream output, CancellationToken ct) => Registry.CollectAndExportAsTextAsync(output, ct);
}
