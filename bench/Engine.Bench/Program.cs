using System.Diagnostics;
using System.Globalization;
using System.Text;
using MoeServer.Actors.Generation;
using MoeServer.Actors.Hosting;
using MoeServer.Actors.Scheduling;
using MoeServer.Bench.Common;
using MoeServer.Kernels.Checkpoints;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Model;
using MoeServer.Kernels.Native;
using MoeServer.Kernels.Sampling;

// Engine benchmark: the same generation workload (N concurrent greedy requests) through the model's direct
// in-process loop, the single-node actor engine, and a 3-node loopback cluster (gateway + 2 expert nodes, three
// ActorSystems in this process talking over TCP), on the `bench` and `small` presets at concurrency 1, 8, 32.
// Usage: dotnet run --project bench/Engine.Bench -c Release -- [--quick] [--presets bench,small] [--out FILE]
CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
bool quick = args.Contains("--quick");
string repo = FindRepoRoot();
string outFile = ArgValue("--out") ?? Path.Combine(repo, "bench", "results", "engine.md");
string[] presets = (ArgValue("--presets") ?? "bench,small").Split(',', StringSplitOptions.RemoveEmptyEntries);
int[] concurrencies = (ArgValue("--concurrency") ?? "1,8,32").Split(',').Select(int.Parse).ToArray();
int promptLen = 8;
// Tokens per request and rounds per preset: every measurement should last about a second or more (a 4-layer
// model's step is ~3 ms, so 32 tokens would be ~0.1 s and timer, GC and scheduling noise would dominate).
(int MaxTokens, int Rounds) Workload(string preset) => preset == "small"
    ? (quick ? 64 : 256, quick ? 2 : 5)
    : (quick ? 16 : 32, quick ? 2 : 3);
var workloads = new Dictionary<string, int>();

Console.WriteLine("measuring machine limits (read bandwidth, matmul rates)...");
var limits = MachineLimits.Measure();
Console.WriteLine($"  read {limits.ReadGBps:F1} GB/s, bf16 matmul {limits.Bf16MatmulGflops:F0} GFLOP/s, fp32 matmul {limits.Fp32MatmulGflops:F0} GFLOP/s, {limits.Cores} cores");

var results = new List<Result>();
foreach (string preset in presets)
{
    string dir = EnsureCheckpoint(preset);
    var (maxTokens, rounds) = Workload(preset);
    workloads[preset] = maxTokens;
    var cfg = ModelConfig.Load(dir);
    var prompts = Enumerable.Range(0, concurrencies.Max()).Select(i =>
    {
        var rng = new Random(100 + i);
        return Enumerable.Range(0, promptLen).Select(_ => rng.Next(10, cfg.VocabSize)).ToArray();
    }).ToArray();

    // All three live side by side and are measured in interleaved rounds (best of the rounds), so machine noise
    // hits every mode alike: the direct loop (batched forwards of the model itself, no actors), a single node (one
    // ActorSystem with both roles; experts are local sharded entities) and a 3-node loopback cluster (experts only on
    // the two expert nodes, activations serialized over TCP).
    using var model = MoeModel.Load(dir);
    var single = await MoeNodeHost.StartAsync(Settings(dir, NodeRole.All, null));
    var gateway = await MoeNodeHost.StartAsync(Settings(dir, NodeRole.Gateway, null));
    var e1 = await MoeNodeHost.StartAsync(Settings(dir, NodeRole.Expert, gateway.SeedNode));
    var e2 = await MoeNodeHost.StartAsync(Settings(dir, NodeRole.Expert, gateway.SeedNode));
    await single.WaitReadyAsync(TimeSpan.FromMinutes(5));
    await gateway.WaitReadyAsync(TimeSpan.FromMinutes(5));
    var engines = new (string Mode, MoeEngine Engine)[] { ("single node", single.Engine), ("3-node cluster", gateway.Engine) };
    foreach (int n in concurrencies)
    {
        // Warm-up: JIT tiers and torch kernels for these shapes, in every mode.
        Direct(model, prompts, n, 4);
        foreach (var (mode, engine) in engines) await Engine(engine, prompts, n, 4, "warm");
        var best = new Dictionary<string, Result>();
        for (int round = 0; round < rounds; round++)
        {
            var (dtps, dsecs) = Direct(model, prompts, n, maxTokens);
            Keep(best, new Result(preset, "direct loop", n, dtps, dsecs, null));
            var (ptps, psecs, psplit) = PhasedDirect(model, prompts, n, maxTokens);
            Keep(best, new Result(preset, "direct, phased", n, ptps, psecs, psplit));
            foreach (var (mode, engine) in engines)
            {
                var before = await engine.GetStatsAsync();
                var (tps, secs) = await Engine(engine, prompts, n, maxTokens, mode);
                var after = await engine.GetStatsAsync();
                Keep(best, new Result(preset, mode, n, tps, secs, Delta(after.Timings, before.Timings)));
            }
        }
        foreach (var r in best.Values)
        {
            results.Add(r);
            Console.WriteLine($"{preset,-6} {r.Mode,-14} c={n,-3} {r.TokensPerSecond,8:F1} tokens/s" + (r.Split is { } sp ? "   per step: " + SplitText(sp) : ""));
        }
    }
    await e2.DisposeAsync();
    await e1.DisposeAsync();
    await gateway.DisposeAsync();
    await single.DisposeAsync();
    GC.Collect();
}

WriteReport(outFile, limits, results, quick, promptLen, workloads);
string prefixPreset = presets.Contains("bench") ? "bench" : presets[0];
string prefixSection = await MoeServer.Bench.Engine.PrefixCacheBench.RunAsync(EnsureCheckpoint(prefixPreset), prefixPreset, quick);
File.AppendAllText(outFile, Environment.NewLine + prefixSection);
return 0;

MoeSettings Settings(string dir, NodeRole role, string? seed) => MoeSettings.Load(role, $$"""
    moe.node { model = "{{dir}}", precision = bf16, cluster-port = 0, seed-nodes = [{{(seed is null ? "" : "\"" + seed + "\"")}}] }
    moe.scheduler { max-running-sequences = 64, max-batch-tokens = 512 }
    akka.loglevel = WARNING
    """);

(double TokensPerSecond, double Seconds) Direct(MoeModel model, int[][] prompts, int n, int steps)
{
    var seqs = Enumerable.Range(0, n).Select(i => model.NewSequence(promptLen + steps + 1)).ToArray();
    var sw = Stopwatch.StartNew();
    var layout = new BatchLayout(seqs.Select((s, i) => new BatchSegment(s, prompts[i])).ToArray());
    var next = Sample(model.Forward(layout), n, model.Config.VocabSize);
    for (int t = 1; t < steps; t++)
        next = Sample(model.Forward(new BatchLayout(seqs.Select((s, i) => new BatchSegment(s, [next[i]])).ToArray())), n, model.Config.VocabSize);
    double secs = sw.Elapsed.TotalSeconds;
    foreach (var s in seqs) s.Dispose();
    return (n * steps / secs, secs);
}

// The direct loop cut into the engine's phases (the step runner's calls, experts run inline on this thread instead of
// in entities): the same split as the engines', without any actor in the way.
(double TokensPerSecond, double Seconds, StepSplit Split) PhasedDirect(MoeModel model, int[][] prompts, int n, int steps)
{
    var seqs = Enumerable.Range(0, n).Select(i => model.NewSequence(promptLen + steps + 1)).ToArray();
    double embed = 0, attn = 0, gate = 0, expert = 0, sample = 0;
    var sw = Stopwatch.StartNew();
    int[][] tokens = prompts.Take(n).ToArray();
    for (int t = 0; t < steps; t++)
    {
        var batch = new BatchLayout(seqs.Select((s, i) => new BatchSegment(s, tokens[i])).ToArray());
        TorchRuntime.UseThreadsFor(batch.TotalTokens);
        using var noGrad = TorchSharp.torch.no_grad();
        long mark = Stopwatch.GetTimestamp();
        double Lap()
        {
            long now = Stopwatch.GetTimestamp();
            double ms = Stopwatch.GetElapsedTime(mark, now).TotalMilliseconds;
            mark = now;
            return ms;
        }
        var x = model.Embed(batch);
        embed += Lap();
        for (int l = 0; l < model.Config.NumLayers; l++)
        {
            var y = model.AttentionBlock(l, x, batch);
            x.Dispose();
            x = y;
            attn += Lap();
            using var work = model.BeginMoe(l, x, batch);
            gate += Lap();
            var experts = model.Weights.Layers[l].Experts;
            var outputs = work.Routing.Groups.Select((g, i) => experts[g.Expert].Forward(work.GroupInput(i), g.Rows.Length)).ToArray();
            expert += Lap();
            y = model.FinishMoe(work, x, outputs);
            x.Dispose();
            x = y;
            gate += Lap();
        }
        using var logits = model.Logits(x, batch.LastRows());
        x.Dispose();
        MoeModel.Commit(batch);
        embed += Lap();
        tokens = Sample(logits, n, model.Config.VocabSize).Select(id => new[] { id }).ToArray();
        sample += Lap();
    }
    double secs = sw.Elapsed.TotalSeconds;
    foreach (var s in seqs) s.Dispose();
    return (n * steps / secs, secs, new StepSplit(attn / steps, gate / steps, expert / steps, 0, sample / steps, embed / steps, steps));
}

static int[] Sample(TorchSharp.torch.Tensor logits, int n, int vocab)
{
    var flat = TorchInterop.ToFloatArray(logits);
    logits.Dispose();
    var r = new int[n];
    for (int i = 0; i < n; i++)
    {
        var row = flat.AsSpan(i * vocab, vocab);
        int best = 0;
        for (int j = 1; j < vocab; j++) if (row[j] > row[best]) best = j;
        r[i] = best;
    }
    return r;
}

async Task<(double, double)> Engine(MoeEngine engine, int[][] prompts, int n, int steps, string tag)
{
    var sw = Stopwatch.StartNew();
    var runs = Enumerable.Range(0, n).Select(async i =>
    {
        var stream = await engine.SubmitAsync(new GenerationRequest($"{tag}-{n}-{i}-{Guid.NewGuid():N}", prompts[i], SamplingParams.Greedy with { MaxTokens = steps }));
        var (_, final, _) = await stream.CollectAsync();
        if (final.Error is not null) throw new InvalidOperationException(final.Error);
        return final.Usage!.CompletionTokens;
    }).ToArray();
    int tokens = (await Task.WhenAll(runs)).Sum();
    double secs = sw.Elapsed.TotalSeconds;
    return (tokens / secs, secs);
}

static void Keep(Dictionary<string, Result> best, Result r)
{
    if (!best.TryGetValue(r.Mode, out var b) || r.TokensPerSecond > b.TokensPerSecond) best[r.Mode] = r;
}

static StepSplit Delta(StepTimings a, StepTimings b)
{
    double steps = Math.Max(1, a.Steps - b.Steps);
    return new StepSplit(
        (a.AttentionMs - b.AttentionMs) / steps,
        (a.GateMs - b.GateMs) / steps,
        (a.ExpertComputeMs - b.ExpertComputeMs) / steps,
        (a.MessagingMs - b.MessagingMs) / steps,
        (a.SamplingMs - b.SamplingMs) / steps,
        (a.EmbedAndHeadMs - b.EmbedAndHeadMs) / steps,
        a.Steps - b.Steps);
}

static string SplitText(StepSplit s) =>
    $"attn {s.AttentionMs:F1} | gate {s.GateMs:F1} | experts {s.ExpertMs:F1} | msg {s.MessagingMs:F1} | sample {s.SamplingMs:F1} | embed+head {s.EmbedHeadMs:F1} ms ({s.Steps} steps)";

string EnsureCheckpoint(string preset)
{
    var p = preset switch
    {
        "bench" => CheckpointPreset.Bench,
        "small" => CheckpointPreset.Small,
        "tiny" => CheckpointPreset.Tiny,
        _ => throw new ArgumentException($"unknown preset {preset}"),
    };
    string dir = Path.Combine(repo, "bench", ".cache", $"{preset}-mixtral");
    if (!File.Exists(Path.Combine(dir, "config.json")))
    {
        Console.WriteLine($"creating the {preset} checkpoint in {dir} (once)...");
        CheckpointFactory.Create(ModelArchitecture.Mixtral, p, dir, new GeneratorOptions
        {
            Seed = 1,
            Progress = (d, t) => { if (d == t || d % 50 == 0) Console.Write($"\r  {d}/{t} tensors"); },
        });
        Console.WriteLine();
    }
    return dir;
}

string? ArgValue(string name) => BenchEnvironment.ArgValue(args, name);

static string FindRepoRoot() => BenchEnvironment.RepoRoot();

static void WriteReport(string path, MachineLimits m, List<Result> results, bool quick, int promptLen, Dictionary<string, int> maxTokens)
{
    Directory.CreateDirectory(Path.GetDirectoryName(path)!);
    var sb = new StringBuilder();
    sb.AppendLine("# Engine benchmark: direct loop vs single-node actor engine vs 3-node loopback cluster");
    sb.AppendLine();
    sb.AppendLine($"Date: {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC. Machine: {m.CpuModel}, {m.Cores} cores; read bandwidth {m.ReadGBps:F1} GB/s, " +
                  $"bf16 matmul {m.Bf16MatmulGflops:F0} GFLOP/s, fp32 matmul {m.Fp32MatmulGflops:F0} GFLOP/s (measured in this run). Mode: {(quick ? "quick" : "full")}.");
    sb.AppendLine($"Workload: N concurrent greedy requests, {promptLen}-token prompts, {string.Join(", ", maxTokens.Select(kv => $"{kv.Value} generated tokens each on {kv.Key}"))}, bf16 weights; " +
                  "throughput = generated tokens / wall time from first submit to last token (prefill included, same work for every mode). " +
                  "The three modes run side by side in one process, measured in interleaved rounds after a warm-up at each concurrency; best round shown.");
    sb.AppendLine();
    foreach (var preset in results.Select(r => r.Preset).Distinct())
    {
        sb.AppendLine($"## {preset} preset");
        sb.AppendLine();
        var rows = new List<IReadOnlyList<string>>();
        foreach (var r in results.Where(r => r.Preset == preset))
        {
            var direct = results.First(d => d.Preset == preset && d.Mode == "direct loop" && d.Concurrency == r.Concurrency);
            var single = results.FirstOrDefault(d => d.Preset == preset && d.Mode == "single node" && d.Concurrency == r.Concurrency);
            string vsDirect = r.Mode == "direct loop" ? "" : $"{r.TokensPerSecond / direct.TokensPerSecond * 100:F0}%";
            string vsSingle = r.Mode == "3-node cluster" && single is not null ? $"{r.TokensPerSecond / single.TokensPerSecond * 100:F0}%" : "";
            rows.Add([r.Mode, r.Concurrency.ToString(), $"{r.TokensPerSecond:F1}", vsDirect, vsSingle,
                r.Split is { } s ? $"{s.AttentionMs:F1}" : "", r.Split is { } s2 ? $"{s2.GateMs:F1}" : "",
                r.Split is { } s3 ? $"{s3.ExpertMs:F1}" : "", r.Split is { } s4 ? $"{s4.MessagingMs:F1}" : "",
                r.Split is { } s5 ? $"{s5.SamplingMs:F1}" : "", r.Split is { } s6 ? $"{s6.EmbedHeadMs:F1}" : ""]);
        }
        sb.AppendLine(MarkdownTable.Render(["mode", "concurrency", "tokens/s", "of direct loop", "of single node",
            "attention ms/step", "gate+combine ms/step", "expert compute ms/step", "messaging ms/step", "sampling ms/step", "embed+head ms/step"], rows));
        sb.AppendLine();
        string png = Path.Combine(Path.GetDirectoryName(path)!, $"engine-{preset}.png");
        var modes = results.Where(r => r.Preset == preset).Select(r => r.Mode).Distinct().ToArray();
        BenchPlot.Lines(png, $"Generation throughput vs concurrency ({preset} preset, bf16)", "concurrent requests", "tokens/s",
            modes.Select(mode =>
            {
                var rs = results.Where(r => r.Preset == preset && r.Mode == mode).OrderBy(r => r.Concurrency).ToArray();
                return (mode, rs.Select(r => (double)r.Concurrency).ToArray(), rs.Select(r => r.TokensPerSecond).ToArray());
            }).ToList(), logX: true);
        sb.AppendLine($"![throughput vs concurrency, {preset}](engine-{preset}.png)");
        sb.AppendLine();
    }
    sb.AppendLine("Targets (issue 3): the single-node actor engine keeps at least 90% of the direct loop at concurrency 8 and 32; " +
                  "the 3-node cluster keeps at least 60% of single-node throughput on `bench` (all nodes share this machine's cores, " +
                  "so the cluster is about capacity, not speed). Per-step split: attention (incl. KV writes), gate + combine (norm, router, " +
                  "top-k grouping, weighted sum, shared/dense MLPs), expert compute (sum of the entities' FFN time), messaging (expert round " +
                  "trips beyond FFN time: actor messaging, serialization, TCP, waiting), sampling, embedding + LM head.");
    File.WriteAllText(path, sb.ToString());
    File.WriteAllText(Path.ChangeExtension(path, ".json"), System.Text.Json.JsonSerializer.Serialize(new { date = DateTime.UtcNow, quick, machine = m, results },
        new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
    Console.WriteLine($"wrote {path}");
}

internal sealed record StepSplit(double AttentionMs, double GateMs, double ExpertMs, double MessagingMs, double SamplingMs, double EmbedHeadMs, long Steps);

internal sealed record Result(string Preset, string Mode, int Concurrency, double TokensPerSecond, double Seconds, StepSplit? Split);
