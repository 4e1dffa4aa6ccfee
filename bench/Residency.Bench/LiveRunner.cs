using System.Diagnostics;
using System.Globalization;
using MoeServer.Actors.Generation;
using MoeServer.Actors.Hosting;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Model;
using MoeServer.Kernels.Residency;
using MoeServer.Kernels.Sampling;
using MoeServer.Kernels.Tokenization;

namespace MoeServer.Bench.Residency;

/// <summary>A trained model of the bench: its prompts, and what the runs learned about its routing.</summary>
internal sealed class BenchModel
{
    public required string Name { get; init; }
    public required string Dir { get; init; }
    public required int[][] Prompts { get; init; }
    /// <summary>Routed experts of the whole model.</summary>
    public required int Experts { get; init; }
    public required long ExpertBytes { get; init; }
    /// <summary>End-of-text ids, biased away so every request generates its max_tokens (as benchmarks do).</summary>
    public required IReadOnlyDictionary<int, float> NoEos { get; init; }
    public IReadOnlyList<SpeculationRecallStats>? Recall { get; set; }
    public double[]? PredictionHitRate { get; set; }
    public (long Planned, long Right)? ExactAgreement { get; set; }
}

/// <summary>What one live run of the workload measured.</summary>
internal sealed record RunResult(RoutingTrace Trace, ResidencyStats Stats, int Capacity, IReadOnlyList<ExpertId> WarmResident,
    long BytesLoaded, long GeneratedTokens, double Seconds, TimeSpan StallTime, TimeSpan LoadTime, double[] Tpot,
    IReadOnlyList<SpeculationRecallStats> Recall, double[] PredictionHitRate, (long Planned, long Right) ExactAgreement)
{
    public double BytesPerToken => (double)BytesLoaded / Math.Max(1, GeneratedTokens);
    public double StallMsPerToken => StallTime.TotalMilliseconds / Math.Max(1, GeneratedTokens);
    public double TokensPerSecond => GeneratedTokens / Seconds;
    public double LoadGBps => LoadTime.TotalSeconds == 0 ? 0 : BytesLoaded / LoadTime.TotalSeconds / 1e9;

    public double TpotPercentile(double q)
    {
        if (Tpot.Length == 0) return 0;
        var sorted = Tpot.Order().ToArray();
        return sorted[Math.Clamp((int)Math.Ceiling(q * sorted.Length) - 1, 0, sorted.Length - 1)];
    }

    /// <summary>Mean distinct (layer, expert) pairs of the steps that ran exactly <paramref name="rows"/> decode rows.</summary>
    public double DistinctPerFullDecodeStep(int rows)
    {
        var steps = Trace.Steps.Where(s => s.Segments.All(g => !g.Prefill) && s.Segments.Length == rows).ToList();
        if (steps.Count == 0) return 0;
        return steps.Average(s => Enumerable.Range(0, Trace.Layers).Sum(l => s.ExpertsOfRow[l].SelectMany(r => r).Distinct().Count()));
    }

    public object Summary(double? simulatedHitRate, double? bound) => new
    {
        HitRate = Stats.HitRate,
        SimulatedHitRate = simulatedHitRate,
        BeladyNoLoadRate = bound,
        Stats.Uses,
        Stats.Hits,
        Stats.DemandLoads,
        Stats.PrefetchLoads,
        Stats.PrefetchHits,
        Stats.WastedPrefetches,
        Stats.Evictions,
        BytesLoaded,
        BytesPerToken,
        StallMsPerToken,
        TokensPerSecond,
        LoadGBps,
        Capacity,
        TpotP50Ms = TpotPercentile(0.5),
        TpotP95Ms = TpotPercentile(0.95),
        Steps = Trace.Steps.Count,
    };
}

/// <summary>Runs the workload of concurrent requests through a fresh single-node engine per configuration.</summary>
internal sealed class LiveRunner(string repo, int requests, int maxTokens)
{
    public BenchModel Load(string name)
    {
        string dir = Path.Combine(repo, "models", name);
        var tokenizer = ModelTokenizer.Load(dir);
        var cfg = ModelConfig.Load(dir);
        var lines = File.ReadLines(Path.Combine(repo, "models", "corpus", "heldout-subset.txt")).Where(l => l.Length > 0).ToArray();
        var rng = new Random(7);
        var prompts = Enumerable.Range(0, requests).Select(i =>
        {
            var ids = tokenizer.Encode(lines[(i * 7) % lines.Length] + " " + lines[(i * 7 + 1) % lines.Length], parseSpecialTokens: false);
            return ids.Take(8 + rng.Next(121)).ToArray();
        }).ToArray();
        int sparse = Enumerable.Range(0, cfg.NumLayers).Count(cfg.IsSparseLayer);
        return new BenchModel
        {
            Name = name,
            Dir = dir,
            Prompts = prompts,
            Experts = sparse * cfg.NumExperts,
            ExpertBytes = 3L * cfg.ExpertIntermediateSize * cfg.HiddenSize * 2,
            NoEos = cfg.EosTokenIds.Concat(tokenizer.EosId is { } e ? [e] : []).Distinct().ToDictionary(id => id, _ => -100f),
        };
    }

    public async Task<RunResult> RunAsync(BenchModel model, string hocon)
    {
        await using var node = await MoeNodeHost.StartAsync(MoeSettings.Load(NodeRole.All, $$"""
            moe.node { model = "{{model.Dir}}", precision = bf16, cluster-port = 0 }
            moe.scheduler { max-running-sequences = {{requests}}, max-batch-tokens = 512 }
            akka.loglevel = WARNING
            {{hocon}}
            """));
        {
            await node.WaitReadyAsync(TimeSpan.FromMinutes(5));
            var engine = node.Engine!;
            var residency = node.Runtime.ExpertResidency!;
            var warm = residency.Resident();
            var before = residency.Stats();
            long bytes0 = residency.Counters.BytesLoaded;
            var stall0 = residency.Counters.StallTime;
            var load0 = residency.Counters.LoadTime;
            await engine.StartRoutingTraceAsync();
            var sw = Stopwatch.StartNew();
            // All at once: submitted one by one, each would wait for the step in flight to be admitted.
            var streams = await Task.WhenAll(Enumerable.Range(0, requests).Select(i => engine.SubmitAsync(new GenerationRequest(
                $"{model.Name}-{i}", model.Prompts[i], new SamplingParams { Temperature = 0.7f, Seed = i + 1, MaxTokens = maxTokens, LogitBias = model.NoEos }))));
            var timings = await Task.WhenAll(streams.Select(TimeStreamAsync));
            double seconds = sw.Elapsed.TotalSeconds;
            var trace = await engine.StopRoutingTraceAsync();
            var after = residency.Stats();
            var g = engine.Gauges;
            var keepLast = Enumerable.Range(0, g.NumLayers).Select(g.PredictionHitRate).ToArray();
            long planned = Enumerable.Range(0, g.NumLayers).Sum(l => g.Predictions(l, exact: true));
            long right = Enumerable.Range(0, g.NumLayers).Sum(l => g.PredictionHits(l, exact: true));
            var stats = new ResidencyStats
            {
                Uses = after.Uses - before.Uses,
                Hits = after.Hits - before.Hits,
                DemandLoads = after.DemandLoads - before.DemandLoads,
                PrefetchLoads = after.PrefetchLoads - before.PrefetchLoads,
                PrefetchHits = after.PrefetchHits - before.PrefetchHits,
                WastedPrefetches = after.WastedPrefetches - before.WastedPrefetches,
                Evictions = after.Evictions - before.Evictions,
            };
            return new RunResult(trace, stats, residency.Capacity, warm, residency.Counters.BytesLoaded - bytes0,
                timings.Sum(t => t.Tokens), seconds, residency.Counters.StallTime - stall0, residency.Counters.LoadTime - load0,
                timings.Where(t => t.Tokens > 1).Select(t => t.TpotMs).ToArray(), g.Speculation.Snapshot(), keepLast, (planned, right));
        }
    }

    private static async Task<(int Tokens, double TpotMs)> TimeStreamAsync(GenerationStream stream)
    {
        int tokens = 0;
        long first = 0, last = 0;
        await foreach (var chunk in stream)
        {
            if (chunk.TokenId < 0) continue;
            long now = chunk.ProducedAt; // not when this task got to read it: 64 readers share 2 cores with the engine
            if (tokens == 0) first = now;
            last = now;
            tokens++;
        }
        double tpot = tokens > 1 ? Stopwatch.GetElapsedTime(first, last).TotalMilliseconds / (tokens - 1) : 0;
        return (tokens, tpot);
    }
}

internal static class TraceFairness
{
    /// <summary>The longest run of steps a decoding sequence went without a decode row.</summary>
    public static long LongestDecodeWait(this RoutingTrace trace)
    {
        var last = new Dictionary<string, long>();
        long longest = 0;
        foreach (var step in trace.Steps)
        {
            foreach (var seg in step.Segments)
            {
                if (seg.Prefill)
                {
                    last[seg.SequenceId] = step.Step; // its last chunk produced the first token
                    continue;
                }
                if (last.TryGetValue(seg.SequenceId, out long prev)) longest = Math.Max(longest, step.Step - prev);
                last[seg.SequenceId] = step.Step;
            }
        }
        return longest;
    }
}
