using System.Diagnostics;
using System.Globalization;
using System.Text;
using MoeServer.Bench.Common;
using MoeServer.Kernels.Checkpoints;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Model;
using MoeServer.Kernels.Native;
using TorchSharp;

// Decode / prefill / load benchmark of the TorchSharp+native model on the `bench` preset (Mixtral-shaped,
// memory-bound), with the machine's limits measured in the same run so every figure is also a fraction of its
// roofline. Usage: dotnet run --project bench/Model.Bench -c Release -- [--quick] [--model DIR] [--out FILE]
CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
bool quick = args.Contains("--quick");
string repo = FindRepoRoot();
string modelDir = ArgValue("--model") ?? Path.Combine(repo, "bench", ".cache", "bench-mixtral");
string outFile = ArgValue("--out") ?? Path.Combine(repo, "bench", "results", "model.md");
int steps = quick ? 8 : 24;

Console.WriteLine("measuring machine limits (read bandwidth, matmul rates)...");
var limits = MachineLimits.Measure();
// The matmul limit is the faster of torch's bf16 and fp32 matmuls: on CPUs without AVX-512 BF16 the bf16 path is
// a slow reference kernel, and bf16 weights are multiplied by widening blocks to fp32 instead.
double matmulPeak = Math.Max(limits.Bf16MatmulGflops, limits.Fp32MatmulGflops);
string matmulName = limits.Bf16MatmulGflops >= limits.Fp32MatmulGflops ? "bf16" : "fp32";
Console.WriteLine($"  read {limits.ReadGBps:F1} GB/s, bf16 matmul {limits.Bf16MatmulGflops:F0} GFLOP/s, fp32 matmul {limits.Fp32MatmulGflops:F0} GFLOP/s, {limits.Cores} cores, {limits.CpuModel}");

if (!File.Exists(Path.Combine(modelDir, "config.json")))
{
    Console.WriteLine($"creating the bench checkpoint in {modelDir} (once)...");
    CheckpointFactory.Create(ModelArchitecture.Mixtral, CheckpointPreset.Bench, modelDir, new GeneratorOptions
    {
        Seed = 1,
        Progress = (d, t) => { if (d == t || d % 50 == 0) Console.Write($"\r  {d}/{t} tensors"); },
    });
    Console.WriteLine();
}

// Load: the first load warms the page cache; the second measures load speed from it.
MoeModel.Load(modelDir).Dispose();
GC.Collect();
using var model = MoeModel.Load(modelDir);
var w = model.Weights;
double loadGBps = w.BytesRead / w.LoadTime.TotalSeconds / 1e9;
Console.WriteLine($"load from page cache: {w.BytesRead / 1e9:F2} GB in {w.LoadTime.TotalSeconds:F2} s = {loadGBps:F2} GB/s");

var cfg = model.Config;
long attnBytes = w.Layers.Sum(l => l.Qkv.WeightBytes + l.Output.WeightBytes);
long expertBytes = w.Layers[0].Experts[0].WeightBytes;
long lmHeadBytes = w.LmHead.WeightBytes;
long activeParamsPerToken = (attnBytes + lmHeadBytes) / 2 + (long)cfg.NumLayers * cfg.NumExpertsPerToken * expertBytes / 2;
Console.WriteLine($"active parameters per token (excluding the embedding lookup): {activeParamsPerToken / 1e6:F0}M");

// Count the distinct experts each step touches: that is the weight traffic of a step.
long touchedExpertBytes = 0;
model.RoutingObserver = r => touchedExpertBytes += r.Groups.Count * expertBytes;

var rows = new List<Row>();
var rng = new Random(5);
int[] RandomTokens(int n) => Enumerable.Range(0, n).Select(_ => rng.Next(10, cfg.VocabSize)).ToArray();

// Prefill: 512-token prompt, best of a few runs.
{
    int n = 512;
    var prompt = RandomTokens(n);
    double best = double.MaxValue;
    for (int rep = 0; rep < (quick ? 2 : 3); rep++)
    {
        using var seq = model.NewSequence(n);
        var sw = Stopwatch.StartNew();
        using var logits = model.Forward(new BatchLayout([new BatchSegment(seq, prompt)]));
        best = Math.Min(best, sw.Elapsed.TotalSeconds);
    }
    double flops = 2.0 * activeParamsPerToken * n + AttentionFlops(cfg, n, 0);
    double tps = n / best;
    double frac = flops / best / 1e9 / matmulPeak;
    rows.Add(new Row("prefill 512 tokens", tps, $"{flops / best / 1e9:F0} GFLOP/s", frac, $"matmul peak ({matmulName})"));
    Console.WriteLine($"prefill: {tps:F1} tokens/s, {frac * 100:F1}% of {matmulName} matmul peak");
}

foreach (int batch in new[] { 1, 8, 32 }) rows.Add(Decode(batch, ""));
// The same batch-1 decode through plain torch ops (no native kernels): what the hand-written path buys.
MoeModel.UseNativeDecodePath = false;
MoeModel.UseNativeDecodeAttention = false;
int savedMaxRows = Linear.NativeMaxRows;
Linear.NativeMaxRows = 0;
rows.Add(Decode(1, " (torch ops only)"));
MoeModel.UseNativeDecodePath = true;
MoeModel.UseNativeDecodeAttention = true;
Linear.NativeMaxRows = savedMaxRows;

WriteReport(outFile, limits, loadGBps, rows, cfg, activeParamsPerToken, quick);
string jsonFile = Path.ChangeExtension(outFile, ".json");
File.WriteAllText(jsonFile, System.Text.Json.JsonSerializer.Serialize(new
{
    date = DateTime.UtcNow,
    quick,
    machine = limits,
    loadGBps,
    rows,
}, new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
// Pictures: decode throughput against its roofline by batch size, and every workload's fraction of its limit.
var decodeRows = rows.Where(r => r.Batch > 0 && !r.Name.Contains("torch")).ToList();
string decodePng = Path.ChangeExtension(outFile, null) + "-decode.png";
BenchPlot.Lines(decodePng, "Decode throughput vs batch (bench preset, bf16)", "sequences in the batch", "tokens/s",
[
    ("measured", decodeRows.Select(r => (double)r.Batch).ToArray(), decodeRows.Select(r => r.TokensPerSecond).ToArray()),
    ("roofline", decodeRows.Select(r => (double)r.Batch).ToArray(), decodeRows.Select(r => r.TokensPerSecond / r.Fraction).ToArray()),
], logX: true);
string fractionPng = Path.ChangeExtension(outFile, null) + "-fraction.png";
BenchPlot.Bars(fractionPng, "Fraction of the machine's limit", "fraction of roofline / matmul peak",
    rows.Select(r => (r.Name, r.Fraction)).ToList(), referenceLine: 0.6, referenceLabel: "decode target 60%");
Console.WriteLine($"wrote {outFile}, {jsonFile}, {decodePng}, {fractionPng}");
return 0;

Row Decode(int batch, string label)
{
    const int promptLen = 64;
    var seqs = Enumerable.Range(0, batch).Select(_ => model.NewSequence(promptLen + steps + 16)).ToList();
    var next = new int[batch];
    for (int b = 0; b < batch; b++)
    {
        using var l = model.Forward(new BatchLayout([new BatchSegment(seqs[b], RandomTokens(promptLen))]));
        next[b] = ArgMax(TorchInterop.ToFloatArray(l));
    }
    // Warm-up steps first (the JIT tiers the orchestration code up after ~30 calls), then timed steps.
    const int warmup = 8;
    double seconds = 0;
    touchedExpertBytes = 0;
    long touchedAtStart = 0;
    for (int s = 0; s < warmup + steps; s++)
    {
        var batchLayout = new BatchLayout(seqs.Select((q, i) => new BatchSegment(q, [next[i]])).ToList());
        if (s == warmup) touchedAtStart = touchedExpertBytes;
        var sw = Stopwatch.StartNew();
        using var logits = model.Forward(batchLayout);
        var flat = TorchInterop.ToFloatArray(logits);
        if (s >= warmup) seconds += sw.Elapsed.TotalSeconds;
        for (int i = 0; i < batch; i++) next[i] = ArgMax(flat.AsSpan(i * cfg.VocabSize, cfg.VocabSize));
    }
    foreach (var q in seqs) q.Dispose();
    double bytesPerStep = attnBytes + lmHeadBytes + (double)(touchedExpertBytes - touchedAtStart) / steps;
    double flopsPerStep = 2.0 * activeParamsPerToken * batch + AttentionFlops(cfg, 1, promptLen + 8 + steps / 2) * batch;
    double memTime = bytesPerStep / (limits.ReadGBps * 1e9), mathTime = flopsPerStep / (matmulPeak * 1e9);
    double stepTime = seconds / steps;
    double tps = batch / stepTime;
    double frac = Math.Max(memTime, mathTime) / stepTime;
    string bound = memTime >= mathTime ? "bandwidth" : "matmul";
    Console.WriteLine($"decode batch {batch}{label}: {tps:F1} tokens/s, {stepTime * 1e3:F2} ms/step, {frac * 100:F1}% of roofline ({bound}-bound, {bytesPerStep / 1e6:F0} MB/step)");
    return new Row($"decode batch {batch}{label}", tps, $"{bytesPerStep / 1e6:F0} MB/step, {stepTime * 1e3:F1} ms/step", frac, $"roofline ({bound})") { Batch = batch };
}

static double AttentionFlops(ModelConfig c, int queries, int pastKeys)
{
    // QK^T and PV: 2 matmuls of 2*hd flops per (query, key, head); causal within the new queries.
    double pairs = (double)queries * pastKeys + queries * (queries + 1) / 2.0;
    return 4.0 * pairs * c.NumHeads * c.HeadDim * c.NumLayers;
}

static int ArgMax(ReadOnlySpan<float> x)
{
    int best = 0;
    for (int i = 1; i < x.Length; i++) if (x[i] > x[best]) best = i;
    return best;
}


string? ArgValue(string name) => BenchEnvironment.ArgValue(args, name);

static string FindRepoRoot() => BenchEnvironment.RepoRoot();

static void WriteReport(string path, MachineLimits m, double loadGBps, List<Row> rows, ModelConfig cfg, long active, bool quick)
{
    Directory.CreateDirectory(Path.GetDirectoryName(path)!);
    var sb = new StringBuilder();
    sb.AppendLine("# Model benchmark: decode, prefill, load (bench preset)");
    sb.AppendLine();
    sb.AppendLine($"Date: {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC. Machine: {m.CpuModel}, {m.Cores} cores. Mode: {(quick ? "quick" : "full")}.");
    sb.AppendLine($"Model: {cfg.Architecture} bench preset, hidden {cfg.HiddenSize}, {cfg.NumLayers} layers, {cfg.NumExperts} experts top-{cfg.NumExpertsPerToken}, " +
                  $"expert ffn {cfg.ExpertIntermediateSize}, vocab {cfg.VocabSize}; bf16 weights; {active / 1e6:F0}M active parameters per token.");
    sb.AppendLine();
    sb.AppendLine("## Machine limits (measured in this run)");
    sb.AppendLine();
    sb.AppendLine("| limit | value |");
    sb.AppendLine("|---|---|");
    sb.AppendLine($"| read bandwidth, all cores, 2 MiB pages | {m.ReadGBps:F1} GB/s |");
    sb.AppendLine($"| bf16 matmul (torch, all cores) | {m.Bf16MatmulGflops:F0} GFLOP/s |");
    sb.AppendLine($"| fp32 matmul (torch, all cores) | {m.Fp32MatmulGflops:F0} GFLOP/s |");
    sb.AppendLine();
    sb.AppendLine("## Results");
    sb.AppendLine();
    sb.AppendLine("| workload | tokens/s | detail | fraction of limit | limit |");
    sb.AppendLine("|---|---|---|---|---|");
    foreach (var r in rows) sb.AppendLine($"| {r.Name} | {r.TokensPerSecond:F1} | {r.Detail} | {r.Fraction * 100:F1}% | {r.Limit} |");
    sb.AppendLine($"| checkpoint load from page cache | | {loadGBps:F2} GB/s | | target 1 GB/s |");
    sb.AppendLine();
    sb.AppendLine("Decode roofline per step = max(weight bytes touched / read bandwidth, FLOPs / matmul peak); weight bytes " +
                  "touched = attention + LM head + the distinct experts the step's routing used (counted per layer). " +
                  "Prefill fraction = achieved FLOP/s / matmul peak (the faster of torch's bf16 and fp32 matmuls on this machine). Reference (DESIGN.md, measured on the project's AVX-512 Zen 5 machines, not necessarily this one): llama.cpp on this shape " +
                  "decodes ~81 tokens/s at batch 1 (73% of roofline) and prefills ~405 tokens/s.");
    string stem = Path.GetFileNameWithoutExtension(path);
    sb.AppendLine();
    sb.AppendLine($"![decode throughput vs batch]({stem}-decode.png)");
    sb.AppendLine($"![fraction of limits]({stem}-fraction.png)");
    File.WriteAllText(path, sb.ToString());
}

internal sealed record Row(string Name, double TokensPerSecond, string Detail, double Fraction, string Limit)
{
    public int Batch { get; init; }
}
