using System.Globalization;
using System.Text;
using MoeServer.Actors.Generation;
using MoeServer.Actors.Hosting;
using MoeServer.Bench.Common;
using MoeServer.Kernels.Generation;
using MoeServer.Kernels.Model;
using MoeServer.Kernels.Native;
using MoeServer.Kernels.Residency;
using MoeServer.Kernels.Sampling;
using MoeServer.Kernels.Tokenization;

// Expert residency benchmark (issue 6, first cut): records a routing trace of N concurrent requests (held-out text
// prompts of mixed lengths, sampled at T=0.7) on each trained model through the single-node engine, then replays
// the expert uses of every step through the residency policies at several budgets, beside Belady's bound.
// `lookahead` sees the uses of the current step only: what exact pre-gating gives the router-decoupled model (its
// router picks every layer's experts before the backbone runs). For the layer-wise model that plan is an oracle
// until speculative gates land, and is labelled so.
// Usage: dotnet run --project bench/Residency.Bench -c Release -- [--quick] [--requests N] [--max-tokens N]
CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
bool quick = args.Contains("--quick");
string repo = BenchEnvironment.RepoRoot();
int requests = int.Parse(BenchEnvironment.ArgValue(args, "--requests") ?? "64", CultureInfo.InvariantCulture);
int maxTokens = int.Parse(BenchEnvironment.ArgValue(args, "--max-tokens") ?? (quick ? "16" : "48"), CultureInfo.InvariantCulture);
string outDir = Path.Combine(repo, "bench", "results");
double[] budgets = [0.125, 0.25, 0.375, 0.5, 0.75];

Console.WriteLine("measuring machine limits (read bandwidth, matmul rates)...");
var limits = MachineLimits.Measure();

var report = new StringBuilder();
report.AppendLine("# Expert residency on the trained models (first cut)");
report.AppendLine();
report.AppendLine($"Machine: {limits.CpuModel}, {limits.Cores} cores; read {limits.ReadGBps:F1} GB/s, bf16 matmul {limits.Bf16MatmulGflops:F0} GFLOP/s, fp32 matmul {limits.Fp32MatmulGflops:F0} GFLOP/s.");
report.AppendLine();
report.AppendLine($"Workload: {requests} concurrent requests, prompts of 8-128 tokens from `models/corpus/heldout-subset.txt`, {maxTokens} tokens each at temperature 0.7 (seeded), single-node engine, bf16; the trace is every step's routing. " +
                  "Hit rate: uses whose expert was resident (a prefetch that arrived counts). No-load rate: 1 - loads / uses, the figure Belady's MIN bounds for every policy. " +
                  "`lookahead` evicts the resident expert whose next use in the current step is furthest (unplanned first); `+prefetch` also loads the next 4 planned experts ahead.");
var plotSeries = new List<(string Name, double[] X, double[] Y)>();
foreach (string name in new[] { "readme-moe", "mixtral-moe" })
{
    string dir = Path.Combine(repo, "models", name);
    var tokenizer = HfTokenizer.Load(dir);
    var lines = File.ReadLines(Path.Combine(repo, "models", "corpus", "heldout-subset.txt")).Where(l => l.Length > 0).ToArray();
    var rng = new Random(7);
    var prompts = Enumerable.Range(0, requests).Select(i =>
    {
        var ids = tokenizer.Encode(lines[(i * 7) % lines.Length] + " " + lines[(i * 7 + 1) % lines.Length], parseSpecialTokens: false);
        return ids.Take(8 + rng.Next(121)).ToArray();
    }).ToArray();

    Console.WriteLine($"{name}: recording a trace of {requests} requests...");
    var node = await MoeNodeHost.StartAsync(MoeSettings.Load(NodeRole.All, $$"""
        moe.node { model = "{{dir}}", precision = bf16, cluster-port = 0 }
        moe.scheduler { max-running-sequences = {{requests}}, max-batch-tokens = 512 }
        akka.loglevel = WARNING
        """));
    await node.WaitReadyAsync(TimeSpan.FromMinutes(5));
    var engine = node.Engine!;
    await engine.StartRoutingTraceAsync();
    var streams = new List<GenerationStream>();
    for (int i = 0; i < requests; i++)
        streams.Add(await engine.SubmitAsync(new GenerationRequest($"{name}-{i}", prompts[i],
            new SamplingParams { Temperature = 0.7f, Seed = i + 1, MaxTokens = maxTokens })));
    await Task.WhenAll(streams.Select(s => s.CollectAsync()));
    var trace = await engine.StopRoutingTraceAsync();
    await node.StopAsync();
    trace.Save(Path.Combine(outDir, $"residency-trace-{name}.jsonl"));

    var uses = trace.ExpertUses();
    var stepEnds = trace.StepEnds();
    int experts = trace.Layers * trace.Experts;
    Console.WriteLine($"  {trace.Steps.Count} steps, {uses.Count} expert uses over {experts} experts");
    string planLabel = name == "readme-moe" ? "exact pre-gate plan" : "oracle plan (speculative gates not yet built)";
    report.AppendLine();
    report.AppendLine($"## {name}: {trace.Steps.Count} steps, {uses.Count} expert uses, {experts} experts; lookahead with the {planLabel}");
    report.AppendLine();
    var keeps = trace.KeepsLastExperts();
    report.AppendLine("A token keeps its sequence's previous token's experts (per layer): " +
                      string.Join(", ", keeps.Select((k, l) => $"L{l} {100 * k:F1}%")) + ".");
    report.AppendLine();
    var table = new MarkdownTable("budget (experts)", "lru hit", "lfu hit", "lookahead hit", "lookahead+prefetch hit", "lru no-load", "lookahead no-load", "Belady bound (no-load)");
    var curves = new Dictionary<string, List<double>> { ["lru"] = [], ["lfu"] = [], ["lookahead"] = [], ["lookahead+prefetch"] = [], ["Belady bound"] = [] };
    foreach (double b in budgets)
    {
        int capacity = Math.Max(1, (int)Math.Round(b * experts));
        SequencePlan Plan() => new(uses, now => stepEnds[now]);
        var lru = ResidencySimulator.Replay(uses, capacity, new LruPolicy());
        var lfu = ResidencySimulator.Replay(uses, capacity, new LfuPolicy());
        var look = ResidencySimulator.Replay(uses, capacity, new LookaheadPolicy(Plan()));
        var pre = ResidencySimulator.Replay(uses, capacity, new LookaheadPolicy(Plan()), prefetchDepth: 4);
        double bound = BeladyBound.NoLoadRate(uses, capacity);
        table.AddRow($"{b:P1} ({capacity})", P(lru.HitRate), P(lfu.HitRate), P(look.HitRate), P(pre.HitRate), P(lru.NoLoadRate), P(look.NoLoadRate), P(bound));
        curves["lru"].Add(100 * lru.HitRate);
        curves["lfu"].Add(100 * lfu.HitRate);
        curves["lookahead"].Add(100 * look.HitRate);
        curves["lookahead+prefetch"].Add(100 * pre.HitRate);
        curves["Belady bound"].Add(100 * bound);
    }
    report.AppendLine(table.ToString());
    foreach (var (policy, ys) in curves) plotSeries.Add(($"{name} {policy}", budgets.Select(x => 100 * x).ToArray(), ys.ToArray()));
}

string png = BenchPlot.Lines(Path.Combine(outDir, "residency-hit-rate.png"), "Expert cache hit rate vs budget (trained models)",
    "budget (% of experts resident)", "hit rate (%)", plotSeries);
report.AppendLine();
report.AppendLine($"![hit rate vs budget]({Path.GetFileName(png)})");
File.WriteAllText(Path.Combine(outDir, "residency.md"), report.ToString());
Console.WriteLine(report.ToString());
return 0;

static string P(double v) => (100 * v).ToString("F1", CultureInfo.InvariantCulture);
