using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using MoeServer.Bench.Common;
using MoeServer.Bench.Fuzz;
using MoeServer.Gateway.Tests.Fuzzing;
using MoeServer.Kernels.Checkpoints;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Native;

// Fuzz and leak bench (issue 15), the long versions of FuzzTests and LeakTests against real server processes on the
// tiny generated checkpoint: (1) a seeded fuzz campaign (default 16,000 HTTP cases + 4,000 hub calls), every answer
// checked, the server's log scanned for exceptions, a normal request served afterwards; (2) two phases of 10,000
// requests ending every way a client ends them, /metrics back at its idle baseline after each and the server's RSS
// measured (target: under 50 MB growth from the end of phase 1 to the end of phase 2).
// Usage: dotnet run --project bench/Fuzz.Bench -c Release -- [--quick] [--seed S] [--http N] [--hub N] [--phase N]
//        [--fuzz-only | --leaks-only] [--from I --count C [--hub-cases]]   (replay: cases I..I+C-1 of seed S, printed)
CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
bool quick = args.Contains("--quick");
string? Arg(string name) => BenchEnvironment.ArgValue(args, name);
int IntArg(string name, int full, int quickValue) => int.Parse(Arg(name) ?? (quick ? quickValue : full).ToString(CultureInfo.InvariantCulture), CultureInfo.InvariantCulture);
ulong seed = ulong.Parse(Arg("--seed") ?? "20261203", CultureInfo.InvariantCulture);
int httpCases = IntArg("--http", 16_000, 2_000);
int hubCases = IntArg("--hub", 4_000, 500);
int phase = IntArg("--phase", 10_000, 2_000);
string serverDll = Arg("--server-dll") ?? Path.Combine(AppContext.BaseDirectory, "MoeServer.Gateway.dll");
string results = Path.Combine(BenchEnvironment.RepoRoot(), "bench", "results");
var clock = Stopwatch.StartNew();
void Progress(string line) => Console.Error.WriteLine($"[{clock.Elapsed.TotalSeconds,7:F1}s] {line}");

string modelDir = Path.Combine(Path.GetTempPath(), $"moe-fuzz-bench-{Environment.ProcessId}", "mixtral-tiny");
CheckpointFactory.Create(CheckpointPresets.Config(ModelArchitecture.Mixtral, CheckpointPreset.Tiny), modelDir, new GeneratorOptions { Seed = 7 });
var config = ModelConfig.Load(modelDir);
var facts = new ModelFacts("mixtral-tiny", config.VocabSize, config.MaxPositionEmbeddings, config.NumLayers, config.NumExperts);
try
{
    if (Arg("--from") is { } fromText)
        return await ReplayAsync(int.Parse(fromText, CultureInfo.InvariantCulture), int.Parse(Arg("--count") ?? "1", CultureInfo.InvariantCulture), args.Contains("--hub-cases"));

    Progress("measuring machine limits...");
    var machine = MachineLimits.Measure();
    string machineLine = $"{machine.CpuModel}, {machine.Cores} cores, {RamGiB():F0} GiB RAM (read bandwidth {machine.ReadGBps:F1} GB/s, " +
        $"fp32 matmul {machine.Fp32MatmulGflops:F0} GFLOP/s, measured in this run); the server and the clients share these cores";
    int failures = 0;
    if (!args.Contains("--leaks-only")) failures += await FuzzAsync(machineLine);
    if (!args.Contains("--fuzz-only")) failures += await LeaksAsync(machineLine);
    return failures == 0 ? 0 : 1;
}
finally
{
    try
    {
        Directory.Delete(Path.GetDirectoryName(modelDir)!, true);
    }
    catch (IOException)
    {
    }
}

async Task<int> FuzzAsync(string machineLine)
{
    using var server = await ServerNode.StartAsync(serverDll, ["--model", modelDir], Progress);
    var campaign = new FuzzCampaign(server.Uri, facts, seed);
    Progress($"fuzz: {httpCases} HTTP cases + {hubCases} hub calls, seed {seed}...");
    long rssBefore = server.RssBytes();
    var report = await campaign.RunAsync(httpCases, hubCases, concurrency: 4, progress: Progress);
    Progress(report.Summary());
    var exceptions = ServerLogScan.Exceptions(server.Output);
    string normal = await server.NormalRequestAsync();
    var idle = await MetricsBaseline.WaitForIdleAsync(server.Http, TimeSpan.FromSeconds(60));
    long rssAfter = server.RssBytes();
    var violations = report.Violations.OrderBy(v => v.Kind).ThenBy(v => v.Index).ToList();

    var md = new StringBuilder();
    md.AppendLine("# Fuzz bench: seeded, mutated requests to every route and hub method");
    md.AppendLine();
    md.AppendLine($"{DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC; {machineLine}.");
    md.AppendLine();
    md.AppendLine($"One server process (`--model` tiny generated Mixtral, single node) on 127.0.0.1; seed {seed}; {httpCases:N0} HTTP cases and " +
        $"{hubCases:N0} hub calls (official client over JSON and MessagePack, and raw JSON-protocol frames), 4 at a time, each with a 60 s deadline. " +
        "Case generators and the rules every answer must follow: `tests/Gateway.Tests/Fuzzing/` (what is fuzzed and how to replay a case: docs/fuzzing.md).");
    md.AppendLine();
    md.AppendLine(MarkdownTable.Render(["measure", "value", "target"],
    [
        ["cases", $"{report.Cases:N0} in {report.Elapsed.TotalSeconds:F0} s ({report.Cases / report.Elapsed.TotalSeconds:F0}/s)", ""],
        ["slowest answer", $"{report.Slowest.TotalSeconds:F2} s ({report.SlowestCase})", "< 60 s (no hang)"],
        ["answers breaking the rules", violations.Count.ToString(CultureInfo.InvariantCulture), "0"],
        ["exceptions in the server log", exceptions.Count.ToString(CultureInfo.InvariantCulture), "0"],
        ["normal request afterwards", normal, "200"],
        ["idle baseline afterwards", string.Join(", ", MetricsBaseline.IdleZero.Select(n => $"{n.Replace("moe_", "", StringComparison.Ordinal)} {idle.GetValueOrDefault(n)}")), "all 0"],
        ["server RSS before / after", $"{rssBefore / 1e6:F0} / {rssAfter / 1e6:F0} MB", ""],
    ]));
    md.AppendLine();
    md.AppendLine("Answers by kind (status, `(kestrel)`: Kestrel's own refusal with an empty body; `closed`: the connection closed without an answer, allowed for broken framing only; hub: `refused` is a HubException from our code, `stream` a whole stream):");
    md.AppendLine();
    md.AppendLine(MarkdownTable.Render(["answer", "count"], report.Outcomes.OrderByDescending(kv => kv.Value).Select(kv => new[] { kv.Key, kv.Value.ToString(CultureInfo.InvariantCulture) }).ToList()));
    if (violations.Count > 0 || exceptions.Count > 0)
    {
        md.AppendLine();
        md.AppendLine("## Violations");
        md.AppendLine();
        foreach (var v in violations.Take(50)) md.AppendLine($"- `{v.Kind} #{v.Index}` {v.Route} ({v.Description}): {v.Problem}");
        foreach (var e in exceptions.Take(20)) md.AppendLine($"- server log: `{e[..Math.Min(300, e.Length)]}`");
    }
    Directory.CreateDirectory(results);
    File.WriteAllText(Path.Combine(results, "fuzz.md"), md.ToString());
    File.WriteAllText(Path.Combine(results, "fuzz.json"), JsonSerializer.Serialize(new
    {
        date = DateTime.UtcNow,
        machine = machineLine,
        seed,
        httpCases,
        hubCases,
        elapsedSeconds = report.Elapsed.TotalSeconds,
        slowestSeconds = report.Slowest.TotalSeconds,
        slowestCase = report.SlowestCase,
        outcomes = report.Outcomes,
        violations = violations.Select(v => v.ToString()),
        serverLogExceptions = exceptions,
        normal,
        idle,
        rssBefore,
        rssAfter,
    }, new JsonSerializerOptions { WriteIndented = true }));
    Progress($"wrote {Path.Combine(results, "fuzz.md")}");
    return violations.Count + exceptions.Count + (normal == "200" ? 0 : 1);
}

async Task<int> LeaksAsync(string machineLine)
{
    string hocon = Path.Combine(Path.GetDirectoryName(modelDir)!, "leaks.hocon");
    const long prefixBudget = 2 << 20;
    File.WriteAllText(hocon, $"moe.scheduler.prefix-cache {{ max-bytes = {prefixBudget}, min-tokens = 4 }}\n");
    using var server = await ServerNode.StartAsync(serverDll, ["--model", modelDir, "--config", hocon], Progress);
    var driver = new LeakDriver(server.Uri, seed);
    await MetricsBaseline.WaitForIdleAsync(server.Http, TimeSpan.FromSeconds(10));
    long rssStart = server.RssBytes();
    var rows = new List<string[]>();
    var phases = new List<object>();
    long rssPhase1 = 0, rssPhase2 = 0;
    int problems = 0;
    for (int p = 1; p <= 2; p++)
    {
        Progress($"leaks: phase {p}, {phase} requests...");
        var report = await driver.RunAsync(phase, concurrency: 8, from: (p - 1) * phase, progress: Progress);
        Progress(report.Summary());
        var idle = await MetricsBaseline.WaitForIdleAsync(server.Http, TimeSpan.FromSeconds(60), prefixBudget);
        GC.Collect();
        await Task.Delay(2000); // the server's own GC runs on its schedule: a short settle before reading RSS
        long rss = server.RssBytes();
        if (p == 1) rssPhase1 = rss;
        else rssPhase2 = rss;
        problems += report.Problems.Count;
        rows.Add([p.ToString(CultureInfo.InvariantCulture), report.Endings.Values.Sum().ToString("N0", CultureInfo.InvariantCulture),
            $"{report.Elapsed.TotalSeconds:F0} s", string.Join(", ", report.Endings.OrderByDescending(kv => kv.Value).Select(kv => $"{kv.Key} {kv.Value}")),
            report.Problems.Count.ToString(CultureInfo.InvariantCulture), $"{rss / 1e6:F0} MB",
            $"prefix cache {idle.GetValueOrDefault("moe_prefix_cache_bytes") / 1e6:F2} MB; others 0"]);
        phases.Add(new { phase = p, report.Endings, problems = report.Problems.Take(50), elapsed = report.Elapsed.TotalSeconds, rss, idle });
    }
    var exceptions = ServerLogScan.Exceptions(server.Output);
    double growthMb = (rssPhase2 - rssPhase1) / 1e6;
    bool met = growthMb < 50 && problems == 0 && exceptions.Count == 0;

    var md = new StringBuilder();
    md.AppendLine("# Leak bench: cancels, disconnects, deadlines and hub disposals");
    md.AppendLine();
    md.AppendLine($"{DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC; {machineLine}.");
    md.AppendLine();
    md.AppendLine($"One server process (tiny generated Mixtral, prefix cache on with a {prefixBudget >> 20} MiB budget so it evicts); two phases of {phase:N0} " +
        "requests, 8 at a time, seeded: read whole or streamed (n up to 3), cancelled by the client, disconnected mid-stream, ended by their own " +
        "`timeout`, hub streams disposed and hub connections stopped. After each phase /metrics must be back at its idle baseline (running, waiting, " +
        "KV reserved and allocated, generation actors, open request streams, API requests holding streams: 0; prefix cache within its budget).");
    md.AppendLine();
    md.AppendLine(MarkdownTable.Render(["phase", "requests", "time", "endings", "problems", "RSS after", "/metrics after"], rows));
    md.AppendLine();
    md.AppendLine(MarkdownTable.Render(["measure", "value", "target"],
    [
        ["RSS at start (idle, warmed up)", $"{rssStart / 1e6:F0} MB", ""],
        ["RSS growth, end of phase 1 to end of phase 2", $"{growthMb:F1} MB", "< 50 MB"],
        ["exceptions in the server log", exceptions.Count.ToString(CultureInfo.InvariantCulture), "0"],
        ["result", met ? "met" : "**not met**", ""],
    ]));
    File.WriteAllText(Path.Combine(results, "leaks.md"), md.ToString());
    File.WriteAllText(Path.Combine(results, "leaks.json"), JsonSerializer.Serialize(new
    {
        date = DateTime.UtcNow,
        machine = machineLine,
        seed,
        phase,
        prefixBudget,
        rssStart,
        rssPhase1,
        rssPhase2,
        growthMb,
        phases,
        serverLogExceptions = exceptions,
        met,
    }, new JsonSerializerOptions { WriteIndented = true }));
    Progress($"wrote {Path.Combine(results, "leaks.md")}: RSS growth {growthMb:F1} MB");
    return met ? 0 : 1;
}

async Task<int> ReplayAsync(int from, int count, bool hubCases)
{
    using var server = await ServerNode.StartAsync(serverDll, ["--model", modelDir], Progress);
    var campaign = new FuzzCampaign(server.Uri, facts, seed);
    for (int i = from; i < from + count; i++)
    {
        if (hubCases)
        {
            var (json, chat, notes) = campaign.Cases.HubArgument(i);
            Console.WriteLine($"hub #{i} ({(chat ? "Chat" : "Generate")}; {notes}): {json[..Math.Min(2000, json.Length)]}");
        }
        else
        {
            var c = campaign.Cases.Generate(i);
            Console.WriteLine($"http #{i} ({c.Description}):\n{Encoding.UTF8.GetString(c.Head)}{c.BodyPreview}");
        }
    }
    var report = await campaign.RunAsync(hubCases ? 0 : count, hubCases ? count : 0, concurrency: 1, from: from);
    Console.WriteLine(report.Summary());
    foreach (var v in report.Violations) Console.WriteLine(v);
    foreach (var e in ServerLogScan.Exceptions(server.Output)) Console.WriteLine("server log: " + e);
    return report.Violations.IsEmpty ? 0 : 1;
}

static double RamGiB()
{
    foreach (string line in File.ReadLines("/proc/meminfo"))
        if (line.StartsWith("MemTotal:", StringComparison.Ordinal))
            return double.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) / (1024 * 1024);
    return 0;
}
