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
    private readonly Gauge? _running, _waiting, _kvUsage, _kvReserved, _kvAllocated, _kvBudget;

    public ServerMetrics(MoeEngine? engine, Actors.Experts.ExpertWorkCounters? experts = null)
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
            _kvUsage = f.CreateGauge("moe_kv_cache_usage_ratio", "KV-cache memory reserved by admitted generations, as a fraction of the budget.");
            _kvReserved = f.CreateGauge("moe_kv_cache_reserved_bytes", "KV-cache bytes reserved by admitted generations (prompt + max_tokens each).");
            _kvAllocated = f.CreateGauge("moe_kv_cache_allocated_bytes", "KV-cache bytes the running generations hold now.");
            _kvBudget = f.CreateGauge("moe_kv_cache_budget_bytes", "KV-cache budget of the engine.");
            Registry.AddBeforeCollectCallback(() => ReadEngine(engine.Gauges));
        }
        if (experts is not null)
        {
            var batches = f.CreateCounter("moe_expert_batches_total", "Expert batches this node ran, per expert.",
                new CounterConfiguration { LabelNames = ["layer", "expert"] });
            var rows = f.CreateCounter("moe_expert_rows_total", "Rows (tokens) this node's experts ran, per expert.",
                new CounterConfiguration { LabelNames = ["layer", "expert"] });
            var seconds = f.CreateCounter("moe_expert_compute_seconds_total", "FFN time of this node's experts, per expert.",
                new CounterConfiguration { LabelNames = ["layer", "expert"] });
            var resident = f.CreateGauge("moe_experts_resident", "Expert entities whose weights are loaded on this node.");
            Registry.AddBeforeCollectCallback(() =>
            {
                resident.Set(experts.Resident);
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

    public CollectorRegistry Registry { get; }

    private void ReadEngine(EngineGauges g)
    {
        _running!.Set(g.Running);
        _waiting!.Set(g.Waiting);
        _kvReserved!.Set(g.KvReservedBytes);
        _kvAllocated!.Set(g.KvAllocatedBytes);
        _kvBudget!.Set(g.KvBudgetBytes);
        _kvUsage!.Set(g.KvBudgetBytes > 0 ? (double)g.KvReservedBytes / g.KvBudgetBytes : 0);
        for (int l = 0; l < g.NumLayers; l++)
        {
            for (int e = 0; e < g.NumExperts; e++)
            {
                long n = g.RoutedTokens(l, e);
                if (n > 0) _routed!.WithLabels(Label(l), Label(e)).IncTo(n);
            }
        }
    }

    private static string Label(int i) => i.ToString(System.Globalization.CultureInfo.InvariantCulture);

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
