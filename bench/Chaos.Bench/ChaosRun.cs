using System.Net.Http.Json;
using System.Text.Json;
using MoeServer.Kernels.Checkpoints;
using MoeServer.Kernels.Model;
using MoeServer.Kernels.Tokenization;

namespace MoeServer.Bench.Chaos;

/// <summary>The options of one bench run (both models share them).</summary>
internal sealed record ChaosOptions(double Minutes, int Clients, int Experts, int MaxTokens, int Seed, string ServerDll, string ResultsDir, bool Quick);

/// <summary>Everything one model's run recorded, for the analysis and the raw JSON.</summary>
internal sealed record RunData(string Model, double Duration, double LoadEnd, List<RequestRecord> Requests, IReadOnlyList<FaultEvent> Faults,
    IReadOnlyList<MembershipEvent> Membership, List<LogEvent> LogLines, List<NodeRss> Rss, List<(double At, int Running)> RunningSamples,
    int PromptCount, int AmbiguousByteStrings, string LogFile, string? Aborted);

/// <summary>VmRSS of one incarnation: after the cluster was ready (or when it started, for restarts) and at its end.</summary>
internal sealed record NodeRss(string Node, int Incarnation, int Pid, double StartedAt, long? StartKb, long? EndKb, int? ExitCode);

/// <summary>
/// One model's run: start the cluster, compute the references, drive the clients while the schedule runs, drain, and
/// kill every process. Always kills its children, whatever happens.
/// </summary>
internal sealed class ChaosRun(ChaosOptions o, string modelDir, Action<string> progress)
{
    private static readonly string[] PromptTexts =
    [
        "In the beginning God created the heaven and the earth.",
        "And God said, Let there be light:",
        "The LORD is my shepherd;",
        "Blessed are the meek:",
        "What is a hacker?",
        "Tell me about the Jargon File.",
        "And it came to pass in those days,",
        "Explain what a kludge is.",
        "Vanity of vanities, saith the Preacher;",
        "Write about a daemon that never sleeps.",
        "For God so loved the world,",
        "What does it mean to grok something?",
        "The words of the prophet Amos, who was among the herdmen",
        "A bug in the code, a feature in the spec.",
        "Honour thy father and thy mother:",
        "Describe the wizard's old terminal.",
    ];

    private Func<double> _now = () => 0;
    private double Now() => _now();

    public async Task<RunData> RunAsync(LocalCluster cluster, CancellationToken abort)
    {
        string model = Path.GetFileName(modelDir.TrimEnd('/'));
        _now = cluster.Now;
        double t0 = Now();
        progress($"[{model}] starting the gateway and {o.Experts} expert nodes (logs: {cluster.LogFile})...");
        var gateway = cluster.Start(0);
        await LocalCluster.WaitListeningAsync(gateway, TimeSpan.FromSeconds(180)).ConfigureAwait(false);
        var experts = Enumerable.Range(1, o.Experts).Select(cluster.Start).ToList();
        foreach (var e in experts) await LocalCluster.WaitListeningAsync(e, TimeSpan.FromSeconds(180)).ConfigureAwait(false);
        using var http = StreamClient.NewHttpClient(cluster.GatewayUri, TimeSpan.FromMinutes(5));
        using var ops = StreamClient.NewHttpClient(cluster.GatewayUri, TimeSpan.FromSeconds(30));
        await WaitReadyAsync(ops, TimeSpan.FromMinutes(5), abort).ConfigureAwait(false);
        progress($"[{model}] cluster ready after {Now() - t0:F1} s");

        // References: the gateway's own tokenization of each chat prompt, run through the direct loop here.
        var promptIds = new List<int[]>();
        foreach (var p in PromptTexts) promptIds.Add(await TokenizeAsync(ops, p, abort).ConfigureAwait(false));
        var tokenizer = ModelTokenizer.Load(modelDir);
        var ids = new TokenIds(tokenizer);
        var refs = new Reference[PromptTexts.Length];
        byte[][] bodies;
        using (var m = MoeModel.Load(modelDir, WeightPrecision.F32))
        {
            var eos = new HashSet<int>(m.Config.EosTokenIds);
            var banned = ids.SpecialIds.Concat(eos).Distinct().ToArray();
            for (int i = 0; i < refs.Length; i++) refs[i] = GreedyReference.Run(m, promptIds[i], o.MaxTokens, eos, banned);
            bodies = PromptTexts.Select(p => StreamClient.Body(p, o.MaxTokens, banned)).ToArray();
        }
        progress($"[{model}] {refs.Length} references computed (direct loop, f32); {ids.AmbiguousCount} byte strings name more than one token");
        var rssStart = cluster.AllIncarnations.ToDictionary(n => n, n => n.RssKb());

        var client = new StreamClient(http, ids, Now);
        var requests = new List<RequestRecord>();
        var running = 0;
        long tokens = 0;
        var runningSamples = new List<(double, int)>();
        double loadStart = Now();
        double loadEnd = loadStart + o.Minutes * 60;
        using var stopLoad = new CancellationTokenSource();
        using var hardStop = CancellationTokenSource.CreateLinkedTokenSource(abort);
        using var stopWatch = new CancellationTokenSource();
        var watcher = new MembershipWatcher(ops, cluster, Now);
        var watching = Task.Run(() => watcher.RunAsync(stopWatch.Token), CancellationToken.None);
        var schedule = new ChaosSchedule(cluster, o.Seed, Now, line => progress($"[{model}] {Now() - loadStart,6:F1}s {line}"));
        using var stopSchedule = CancellationTokenSource.CreateLinkedTokenSource(abort);
        var scheduling = Task.Run(() => schedule.RunAsync(loadEnd, stopSchedule.Token), CancellationToken.None);
        var rssLast = new Dictionary<NodeProcess, long?>();
        var sampler = Task.Run(async () =>
        {
            long lastTokens = 0;
            double lastAt = Now();
            for (int tick = 0; !stopWatch.IsCancellationRequested; tick++)
            {
                try
                {
                    await Task.Delay(1000, stopWatch.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    break;
                }
                lock (runningSamples) runningSamples.Add((Now(), Volatile.Read(ref running)));
                foreach (var n in cluster.AllIncarnations.Where(n => !n.HasExited))
                    lock (rssLast) rssLast[n] = n.RssKb() ?? (rssLast.TryGetValue(n, out var v) ? v : null);
                if (tick % 5 != 4) continue;
                long t = Interlocked.Read(ref tokens);
                double at = Now();
                int done, failed;
                lock (requests)
                {
                    done = requests.Count(r => r.End > 0);
                    failed = requests.Count(r => r.End > 0 && !r.Ok);
                }
                progress($"[{model}] {at - loadStart,6:F1}s  {(t - lastTokens) / (at - lastAt),6:F1} tokens/s  running {Volatile.Read(ref running),3}  " +
                         $"done {done}  failed {failed}  faults {schedule.FaultCount}  healthy experts {schedule.HealthyExperts}/{o.Experts}  " +
                         $"members up {watcher.UpReachable}");
                lastTokens = t;
                lastAt = at;
            }
        }, CancellationToken.None);

        progress($"[{model}] {o.Clients} clients for {o.Minutes:F1} min, schedule seed {o.Seed}, max_tokens {o.MaxTokens}");
        int seq = 0;
        var clients = Enumerable.Range(0, o.Clients).Select(c => Task.Run(async () =>
        {
            for (int k = 0; Now() < loadEnd && !stopLoad.IsCancellationRequested; k++)
            {
                int prompt = (c + k) % bodies.Length;
                var r = new RequestRecord { Client = c, Prompt = prompt, Id = $"chaos-{model}-{Interlocked.Increment(ref seq)}" };
                lock (requests) requests.Add(r);
                Interlocked.Increment(ref running);
                await client.RunAsync(r, bodies[prompt], _ => Interlocked.Increment(ref tokens), hardStop.Token).ConfigureAwait(false);
                Interlocked.Decrement(ref running);
                // A client whose request failed at once would spin: wait a little before the next one.
                if (!r.Ok && r.TokenTimes.Count == 0) await Task.Delay(500, CancellationToken.None).ConfigureAwait(false);
            }
        }, CancellationToken.None)).ToArray();

        string? aborted = null;
        var all = Task.WhenAll(clients);
        try
        {
            // Requests still running at the end may finish for up to 2 minutes (over the server's own deadlines).
            await Task.WhenAny(all, Task.Delay(TimeSpan.FromSeconds(o.Minutes * 60 + 120), abort)).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            aborted = "interrupted";
        }
        if (!all.IsCompleted)
        {
            aborted ??= "requests still running 2 minutes after the end were cancelled";
            await hardStop.CancelAsync().ConfigureAwait(false);
            await Task.WhenAny(all, Task.Delay(TimeSpan.FromSeconds(10), CancellationToken.None)).ConfigureAwait(false);
        }
        await stopSchedule.CancelAsync().ConfigureAwait(false);
        await scheduling.ConfigureAwait(false); // hung nodes are resumed and watched for their exit (at most 90 s)
        await stopWatch.CancelAsync().ConfigureAwait(false);
        await Task.WhenAll(watching, sampler).ConfigureAwait(false);
        double duration = Now();
        var rss = cluster.AllIncarnations.OrderBy(n => n.StartedAt).Select(n =>
        {
            long? end = n.HasExited ? null : n.RssKb();
            lock (rssLast) end ??= rssLast.TryGetValue(n, out var v) ? v : null;
            rssStart.TryGetValue(n, out var start);
            return new NodeRss(n.Name, n.Incarnation, n.Pid, n.StartedAt - loadStart, start ?? FirstSample(n), end, n.ExitCode);
        }).ToList();
        cluster.KillAll();

        foreach (var r in requests.Where(r => r.Ok)) (r.Check, r.ComparedTokens) = GreedyReference.Compare(refs[r.Prompt], r.TokenIds, r.FinishReason, ids);
        // Times relative to the start of the load, so plots and reports start at 0.
        foreach (var r in requests)
        {
            r.Start -= loadStart;
            r.End -= loadStart;
            for (int i = 0; i < r.TokenTimes.Count; i++) r.TokenTimes[i] -= loadStart;
        }
        return new RunData(model, o.Minutes * 60, loadEnd - loadStart, requests,
            schedule.Events.Select(e => e with { At = e.At - loadStart }).ToList(),
            watcher.Events.Select(e => e with { At = e.At - loadStart }).ToList(),
            cluster.LogEvents.Select(e => e with { At = e.At - loadStart }).ToList(),
            rss, runningSamples.Select(s => (s.Item1 - loadStart, s.Item2)).ToList(), PromptTexts.Length, ids.AmbiguousCount,
            cluster.LogFile, aborted);

        long? FirstSample(NodeProcess n)
        {
            lock (rssLast) return rssLast.TryGetValue(n, out var v) ? v : null;
        }
    }

    private static async Task WaitReadyAsync(HttpClient http, TimeSpan timeout, CancellationToken ct)
    {
        var deadline = DateTime.UtcNow + timeout;
        string last = "";
        while (DateTime.UtcNow < deadline)
        {
            try
            {
                using var t = CancellationTokenSource.CreateLinkedTokenSource(ct);
                t.CancelAfter(TimeSpan.FromSeconds(5));
                using var r = await http.GetAsync("ready", t.Token).ConfigureAwait(false);
                if (r.IsSuccessStatusCode) return;
                last = await r.Content.ReadAsStringAsync(t.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is HttpRequestException or TaskCanceledException && !ct.IsCancellationRequested)
            {
                last = e.Message;
            }
            await Task.Delay(500, ct).ConfigureAwait(false);
        }
        throw new InvalidOperationException($"the gateway was not ready within {timeout.TotalSeconds:F0} s: {last}");
    }

    private static async Task<int[]> TokenizeAsync(HttpClient http, string prompt, CancellationToken ct)
    {
        using var t = CancellationTokenSource.CreateLinkedTokenSource(ct);
        t.CancelAfter(TimeSpan.FromSeconds(30));
        using var resp = await http.PostAsJsonAsync("tokenize", new { messages = new[] { new { role = "user", content = prompt } } }, t.Token)
            .ConfigureAwait(false);
        resp.EnsureSuccessStatusCode();
        using var doc = JsonDocument.Parse(await resp.Content.ReadAsStringAsync(t.Token).ConfigureAwait(false));
        return doc.RootElement.GetProperty("tokens").EnumerateArray().Select(e => e.GetInt32()).ToArray();
    }
}
