using System.Globalization;
using System.Runtime.InteropServices;
using MoeServer.Bench.Chaos;
using MoeServer.Bench.Common;
using MoeServer.Kernels.Native;

// Chaos bench (issue 15): per model, a loopback cluster of real server processes (1 gateway + N expert nodes) serves
// streaming greedy clients while a seeded schedule kills, hangs and restarts expert nodes; every answer is checked
// against the direct loop. Progress goes to stderr; the tables to stdout; bench/results/chaos.{md,json} + a PNG per model.
// Usage: dotnet run --project bench/Chaos.Bench -c Release -- [--quick] [--minutes M] [--clients 64] [--experts 3]
//        [--max-tokens 48] [--seed 15] [--models mixtral-moe,readme-moe] [--server-dll PATH] [--out FILE.md]
CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
bool quick = args.Contains("--quick");
string repo = BenchEnvironment.RepoRoot();
string? Arg(string name) => BenchEnvironment.ArgValue(args, name);
var options = new ChaosOptions(
    Minutes: double.Parse(Arg("--minutes") ?? (quick ? "1.5" : "5"), CultureInfo.InvariantCulture),
    Clients: int.Parse(Arg("--clients") ?? "64", CultureInfo.InvariantCulture),
    Experts: int.Parse(Arg("--experts") ?? "3", CultureInfo.InvariantCulture),
    MaxTokens: int.Parse(Arg("--max-tokens") ?? "48", CultureInfo.InvariantCulture),
    Seed: int.Parse(Arg("--seed") ?? "15", CultureInfo.InvariantCulture),
    ServerDll: Arg("--server-dll") ?? Path.Combine(AppContext.BaseDirectory, "MoeServer.Gateway.dll"),
    ResultsDir: Path.Combine(repo, "bench", "results"),
    Quick: quick);
string outFile = Arg("--out") ?? Path.Combine(options.ResultsDir, "chaos.md");
string[] models = (Arg("--models") ?? "mixtral-moe,readme-moe").Split(',', StringSplitOptions.RemoveEmptyEntries);
if (options.Experts < 2) return Usage("--experts must be at least 2 (one is always left untouched)");
if (!File.Exists(options.ServerDll)) return Usage($"{options.ServerDll} not found (build bench/Chaos.Bench, or give --server-dll)");

var clock = System.Diagnostics.Stopwatch.StartNew();
void Progress(string line) => Console.Error.WriteLine($"[{clock.Elapsed.TotalSeconds,7:F1}s] {line}");

// Every child dies with the bench: on normal exit, exceptions, Ctrl+C, SIGTERM and SIGHUP.
using var abort = new CancellationTokenSource();
LocalCluster? live = null;
void KillChildren() => Volatile.Read(ref live)?.KillAll();
AppDomain.CurrentDomain.ProcessExit += (_, _) => KillChildren();
AppDomain.CurrentDomain.UnhandledException += (_, _) => KillChildren();
void OnSignal(PosixSignalContext ctx)
{
    ctx.Cancel = true; // exit through the normal path, which kills the children and writes what was measured
    Progress($"{ctx.Signal}: stopping (killing every node)...");
    KillChildren();
    abort.Cancel();
}
using var sigInt = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
using var sigTerm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
using var sigHup = PosixSignalRegistration.Create(PosixSignal.SIGHUP, OnSignal);

Progress("measuring machine limits (read bandwidth, matmul rates)...");
var machine = MachineLimits.Measure();
double ramGiB = RamGiB();
Progress($"  {machine.CpuModel}, {machine.Cores} cores, {ramGiB:F0} GiB, read {machine.ReadGBps:F1} GB/s");

var runs = new List<(RunData, ModelResult, string)>();
for (int modelIndex = 0; modelIndex < models.Length; modelIndex++)
{
    string name = models[modelIndex];
    if (abort.IsCancellationRequested) break;
    string dir = Path.Combine(repo, "models", name);
    string log = Path.Combine(Path.GetTempPath(), $"moe-chaos-{name}-{Environment.ProcessId}.log");
    File.Delete(log);
    var cluster = new LocalCluster(options.ServerDll, dir, options.Experts, log, () => clock.Elapsed.TotalSeconds);
    Volatile.Write(ref live, cluster);
    try
    {
        // Each model its own schedule (seed + index): one seed for both gave both the same faults.
        var data = await new ChaosRun(options with { Seed = options.Seed + modelIndex }, dir, Progress).RunAsync(cluster, abort.Token);
        var result = ModelResult.From(data);
        string png = TimelinePlot.Write(Path.Combine(Path.GetDirectoryName(Path.GetFullPath(outFile))!, $"chaos-{name}.png"), data);
        runs.Add((data, result, png));
        Progress($"[{name}] {result.Requests} requests: {result.Completed} completed, {result.Failed} failed, {result.Changed} changed; " +
                 $"recovery p50 {Secs(result.Recovery.P50)} / p99 {Secs(result.Recovery.P99)}; {result.FalseDownings.Count} false downings");
    }
    catch (Exception e) when (e is InvalidOperationException or HttpRequestException or IOException or OperationCanceledException)
    {
        Progress($"[{name}] the run failed: {e.Message}");
        if (!abort.IsCancellationRequested) return Fail(cluster);
    }
    finally
    {
        cluster.Dispose();
        Volatile.Write(ref live, null);
    }
}
if (runs.Count == 0) return 1;
var report = new Report(DateTime.UtcNow, options, machine, ramGiB, runs);
report.Print();
report.Write(outFile);
Progress($"wrote {outFile}, {Path.ChangeExtension(outFile, ".json")} and the timelines chaos-<model>.png");
return abort.IsCancellationRequested ? 130 : 0;

static int Usage(string message)
{
    Console.Error.WriteLine(message);
    return 2;
}

int Fail(LocalCluster cluster)
{
    Progress($"node logs: {cluster.LogFile}");
    return 1;
}

static double RamGiB()
{
    var line = File.ReadLines("/proc/meminfo").FirstOrDefault(l => l.StartsWith("MemTotal:", StringComparison.Ordinal));
    return line is null ? double.NaN : long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) / 1048576.0;
}

static string Secs(double s) => double.IsPositiveInfinity(s) ? "∞ (a stream never got another token)" : $"{s:F2} s";
