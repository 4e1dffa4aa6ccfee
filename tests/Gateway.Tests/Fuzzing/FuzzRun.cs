using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text.RegularExpressions;

namespace MoeServer.Gateway.Tests.Fuzzing;

/// <summary>A broken rule: which case (seed and index reproduce it), what was sent, what came back.</summary>
public sealed record FuzzViolation(string Kind, int Index, string Route, string Description, string Sent, string Problem)
{
    public override string ToString() => $"[{Kind} #{Index}] {Route} ({Description}): {Problem}\n    sent: {Sent}";
}

/// <summary>What a fuzz run did: answers by kind, the violations, and timing.</summary>
public sealed class FuzzReport
{
    public ConcurrentDictionary<string, int> Outcomes { get; } = new();
    public ConcurrentBag<FuzzViolation> Violations { get; } = [];
    private int _cases;

    public int Cases => Volatile.Read(ref _cases);

    internal void CaseDone() => Interlocked.Increment(ref _cases);
    public TimeSpan Elapsed { get; set; }
    /// <summary>Slowest answer of the run (a hang shows up as a violation instead).</summary>
    public TimeSpan Slowest { get; set; }
    /// <summary>Which case it was ("http #i" or "hub #i").</summary>
    public string SlowestCase { get; set; } = "";

    public void Count(string outcome) => Outcomes.AddOrUpdate(outcome, 1, (_, n) => n + 1);

    public string Summary() =>
        $"{Cases} cases in {Elapsed.TotalSeconds:0.0} s, slowest {Slowest.TotalSeconds:0.00} s ({SlowestCase}); " +
        string.Join(", ", Outcomes.OrderByDescending(kv => kv.Value).Select(kv => $"{kv.Key}: {kv.Value}")) +
        $"; {Violations.Count} violations";
}

/// <summary>
/// Runs a seeded fuzz campaign against a running gateway: <c>httpCases</c> HTTP requests and <c>hubCases</c> hub calls,
/// <c>concurrency</c> at a time, each with its own timeout (an answer that does not come in time is a hang). Case
/// <c>i</c> is reproduced by running the same seed with <c>--from i --count 1</c> (bench) or
/// <see cref="RunOneAsync"/>.
/// </summary>
public sealed class FuzzCampaign(Uri server, ModelFacts model, ulong seed)
{
    public TimeSpan CaseTimeout { get; init; } = TimeSpan.FromSeconds(60);
    public TimeSpan SlowBodyPause { get; init; } = TimeSpan.FromMilliseconds(150);

    private readonly HttpCaseGenerator _cases = new(model, seed);

    public HttpCaseGenerator Cases => _cases;

    public async Task<FuzzReport> RunAsync(int httpCases, int hubCases, int concurrency, Action<string>? progress = null, int from = 0)
    {
        var report = new FuzzReport();
        var hub = new HubFuzzer(server, _cases, seed);
        var clock = Stopwatch.StartNew();
        long slowestTicks = 0;
        string slowestCase = "";
        // Interleave HTTP and hub cases so both run under each other's load.
        var work = Enumerable.Range(from, httpCases).Select(i => (Hub: false, Index: i))
            .Concat(Enumerable.Range(from, hubCases).Select(i => (Hub: true, Index: i)))
            .OrderBy(w => w.Hub ? w.Index * (double)httpCases / Math.Max(1, hubCases) : w.Index)
            .ToArray();
        int done = 0;
        await Parallel.ForEachAsync(work, new ParallelOptions { MaxDegreeOfParallelism = concurrency }, async (w, _) =>
        {
            long t0 = Stopwatch.GetTimestamp();
            if (w.Hub) await RunHubAsync(hub, w.Index, report).ConfigureAwait(false);
            else await RunOneAsync(w.Index, report).ConfigureAwait(false);
            long took = Stopwatch.GetTimestamp() - t0;
            lock (work)
            {
                if (took > slowestTicks)
                {
                    slowestTicks = took;
                    slowestCase = $"{(w.Hub ? "hub" : "http")} #{w.Index}";
                }
            }
            report.CaseDone();
            int n = Interlocked.Increment(ref done);
            if (n % 500 == 0) progress?.Invoke($"{n}/{work.Length} cases, {report.Violations.Count} violations, {clock.Elapsed.TotalSeconds:0} s");
        }).ConfigureAwait(false);
        report.Elapsed = clock.Elapsed;
        report.Slowest = Stopwatch.GetElapsedTime(0, slowestTicks);
        report.SlowestCase = slowestCase;
        return report;
    }

    /// <summary>Sends HTTP case <paramref name="index"/> and checks its answer.</summary>
    public async Task RunOneAsync(int index, FuzzReport report)
    {
        var c = _cases.Generate(index);
        using var cts = new CancellationTokenSource(CaseTimeout);
        RawResponse r;
        try
        {
            r = await RawHttp.SendAsync(server, c.Head, c.Body, c.Mode, SlowBodyPause, cts.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cts.IsCancellationRequested)
        {
            report.Count("hang");
            report.Violations.Add(new FuzzViolation("http", index, c.Route, c.Description, c.BodyPreview, $"no answer within {CaseTimeout.TotalSeconds:0} s"));
            return;
        }
        catch (System.Net.Sockets.SocketException e)
        {
            report.Count("connect failed");
            report.Violations.Add(new FuzzViolation("http", index, c.Route, c.Description, c.BodyPreview, $"could not connect: {e.Message}"));
            return;
        }
        string? problem = FuzzOracle.Check(c, r, out string outcome);
        report.Count(c.Streaming && outcome == "200" ? "200 stream" : outcome);
        if (problem is not null) report.Violations.Add(new FuzzViolation("http", index, c.Route, c.Description, c.BodyPreview, problem));
    }

    private async Task RunHubAsync(HubFuzzer hub, int index, FuzzReport report)
    {
        HubResult result;
        try
        {
            result = await hub.RunAsync(index, CaseTimeout).ConfigureAwait(false);
        }
        catch (Exception e) when (e is System.Net.WebSockets.WebSocketException or HttpRequestException or System.IO.IOException
                                      or InvalidOperationException or System.Text.Json.JsonException)
        {
            // The client library's own failure (e.g. the server closed the connection on a frame it could not parse):
            // counted, and a violation only if the server's log shows an exception behind it.
            result = new HubResult("hub connection closed: " + e.GetType().Name, null);
        }
        report.Count(result.Outcome);
        if (result.Violation is not null)
        {
            var (json, _, notes) = _cases.HubArgument(index);
            report.Violations.Add(new FuzzViolation("hub", index, "/hubs/chat", notes, json.Length <= 300 ? json : json[..300] + "...", result.Violation));
        }
    }
}

/// <summary>Finds exceptions a server wrote to its log (the simple console format: one line per entry, exception
/// text inline): anything logged as fail/crit, and any line with an exception's type and stack.</summary>
public static partial class ServerLogScan
{
    public static IReadOnlyList<string> Exceptions(string log) => log.Split('\n')
        .Where(line => FailLine().IsMatch(line) || ExceptionLine().IsMatch(line))
        .Select(line => line.Length <= 2000 ? line : line[..2000] + "...")
        .ToList();

    [GeneratedRegex(@"^\S+ \S+ (fail|crit):")]
    private static partial Regex FailLine();

    [GeneratedRegex(@"\b[A-Z]\w*(\.\w+)*Exception\b.*\bat [A-Z]\w*\.")]
    private static partial Regex ExceptionLine();
}
