using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace MoeServer.Bench.Gateway;

/// <summary>One concurrency level of the load run.</summary>
/// <param name="TokensPerSecond">Generated tokens whose event arrived inside the measured window, per second of window
/// (an event that carries k tokens' text counts k: each request's events share its usage.completion_tokens).</param>
/// <param name="RequestsPerSecond">Requests that completed inside the window, per second.</param>
/// <param name="Ttft">Time to first token (send to the first event with text) of the requests started in the window.</param>
/// <param name="Itl">Gaps between consecutive text events of those requests.</param>
/// <param name="Measured">Requests started inside the window.</param>
/// <param name="Total">All requests of this level, warm-up and drain included.</param>
/// <param name="Errors">Failed requests among <paramref name="Total"/>.</param>
/// <param name="Tpot">Time per output token after the first, per request (see <see cref="RequestTrace.TpotMs"/>).</param>
internal sealed record LoadResult(int Concurrency, double WindowSeconds, double TokensPerSecond, double RequestsPerSecond,
    Latency Ttft, Latency Itl, Latency Tpot, int Measured, int Total, int Errors, Dictionary<string, int> ErrorsByKind, string? FirstError,
    double TextEventsPerToken)
{
    public static LoadResult From(int n, List<RequestTrace> all, long windowStart, long windowEnd)
    {
        double seconds = (windowEnd - windowStart) / (double)Stopwatch.Frequency;
        double tokens = 0;
        int completedInWindow = 0;
        foreach (var t in all)
        {
            if (t.Ok && t.End >= windowStart && t.End < windowEnd) completedInWindow++;
            if (t.TextEvents.Count == 0) continue;
            double perEvent = t.CompletionTokens > 0 ? t.CompletionTokens / (double)t.TextEvents.Count : 1;
            foreach (long e in t.TextEvents)
                if (e >= windowStart && e < windowEnd) tokens += perEvent;
        }
        var measured = all.Where(t => t.Start >= windowStart && t.Start < windowEnd).ToList();
        var ok = measured.Where(t => t.Ok).ToList();
        var gaps = new List<double>();
        foreach (var t in ok) t.AddGaps(gaps);
        var failed = all.Where(t => !t.Ok).ToList();
        var byKind = Enum.GetValues<Failure>().Where(f => f != Failure.None)
            .ToDictionary(f => f.ToString(), f => failed.Count(t => t.Failure == f));
        var okAll = all.Where(t => t.Ok && t.CompletionTokens > 0).ToList();
        double eventsPerToken = okAll.Count == 0 ? double.NaN
            : okAll.Sum(t => (double)t.TextEvents.Count) / okAll.Sum(t => (double)t.CompletionTokens);
        return new LoadResult(n, seconds, tokens / seconds, completedInWindow / seconds,
            Latency.Of(ok.Select(t => t.TtftMs).ToList()), Latency.Of(gaps), Latency.Of(ok.Select(t => t.TpotMs).Where(double.IsFinite).ToList()), measured.Count, all.Count, failed.Count, byKind,
            failed.FirstOrDefault()?.Error, eventsPerToken);
    }
}

/// <summary>HTTP vs direct engine at concurrency 1, measured in alternating pairs.</summary>
internal sealed record OverheadResult(int Rounds, Latency HttpTtft, Latency InProcTtft, Latency HttpItl, Latency InProcItl,
    Latency HttpTpot, Latency InProcTpot,
    double OverheadP50, double OverheadP99, double PairedMedian, double PairedMean, int HttpErrors, int InProcErrors,
    int TokenMismatches, string? FirstError)
{
    public const double TargetP50Ms = 5.0;
    public bool TargetMet => OverheadP50 < TargetP50Ms;

    public static OverheadResult From(List<RequestTrace> http, List<RequestTrace> direct, int maxTokens)
    {
        var pairs = http.Zip(direct).Where(p => p.First.Ok && p.Second.Ok && p.First.TextEvents.Count > 0 && p.Second.TextEvents.Count > 0).ToList();
        var h = pairs.Select(p => p.First.TtftMs).ToList();
        var d = pairs.Select(p => p.Second.TtftMs).ToList();
        var diffs = pairs.Select(p => p.First.TtftMs - p.Second.TtftMs).ToList();
        var hg = new List<double>();
        var dg = new List<double>();
        foreach (var (a, b) in pairs)
        {
            a.AddGaps(hg);
            b.AddGaps(dg);
        }
        var ht = Latency.Of(h);
        var dt = Latency.Of(d);
        int mismatches = pairs.Count(p => p.First.CompletionTokens != p.Second.CompletionTokens || p.First.CompletionTokens != maxTokens
                                          || p.First.TextEvents.Count != p.Second.TextEvents.Count);
        return new OverheadResult(http.Count, ht, dt, Latency.Of(hg), Latency.Of(dg),
            Latency.Of(pairs.Select(p => p.First.TpotMs).Where(double.IsFinite).ToList()),
            Latency.Of(pairs.Select(p => p.Second.TpotMs).Where(double.IsFinite).ToList()), ht.P50 - dt.P50, ht.P99 - dt.P99,
            Stats.Percentile(diffs, 50), diffs.Count == 0 ? double.NaN : diffs.Average(),
            http.Count(t => !t.Ok), direct.Count(t => !t.Ok), mismatches,
            http.Concat(direct).FirstOrDefault(t => !t.Ok)?.Error);
    }
}

/// <summary>One part of time-to-first-token from the server-side timestamps (ms).</summary>
internal sealed record ProfileSegment(string Path, string Segment, double P50, double P90, double Mean, int Samples)
{
    public static List<ProfileSegment> From(List<(ProbeMarks M, RequestTrace T)> http, List<(ProbeMarks M, RequestTrace T)> direct)
    {
        var list = new List<ProfileSegment>();
        void Add(string path, string name, IEnumerable<(ProbeMarks M, RequestTrace T)> rows, Func<ProbeMarks, RequestTrace, long> from,
            Func<ProbeMarks, RequestTrace, long> to)
        {
            var ms = rows.Where(r => from(r.M, r.T) != 0 && to(r.M, r.T) != 0).Select(r => Stats.Ms(from(r.M, r.T), to(r.M, r.T))).ToList();
            list.Add(new ProfileSegment(path, name, Stats.Percentile(ms, 50), Stats.Percentile(ms, 90), ms.Count == 0 ? double.NaN : ms.Average(), ms.Count));
        }
        static long First(RequestTrace t) => t.TextEvents.Count > 0 ? t.TextEvents[0] : 0;

        const string H = "HTTP";
        Add(H, "client send -> hosting starts the request (HttpClient, loopback, Kestrel parse)", http, (m, t) => t.Start, (m, t) => m.HostingStart);
        Add(H, "hosting start -> endpoint (request-id, API-key, static-file middleware, routing)", http, (m, t) => m.HostingStart, (m, t) => m.Endpoint);
        Add(H, "endpoint -> moe.admit starts (read body, JSON, tokenize, plan)", http, (m, t) => m.Endpoint, (m, t) => m.AdmitStart);
        Add(H, "moe.admit starts -> prefill step starts (SubmitAsync, scheduler)", http, (m, t) => m.AdmitStart, (m, t) => m.StepStart);
        Add(H, "prefill step (forward pass)", http, (m, t) => m.StepStart, (m, t) => m.StepStop);
        Add(H, "step ends -> its event is flushed (sampling, actor, channel, SSE JSON)", http, (m, t) => m.StepStop, (m, t) => m.FlushBefore(First(t)).Begin);
        Add(H, "the flush (Kestrel response write)", http, (m, t) => m.FlushBefore(First(t)).Begin, (m, t) => m.FlushBefore(First(t)).End);
        Add(H, "flush done -> client has the event (socket, loopback, client read)", http, (m, t) => m.FlushBefore(First(t)).End, (m, t) => First(t));
        Add(H, "TTFT (client send -> first event)", http, (m, t) => t.Start, (m, t) => First(t));
        Add(H, "(moe.admit: SubmitAsync until admitted)", http, (m, t) => m.AdmitStart, (m, t) => m.AdmitStop);
        Add(H, "(moe.admit ends -> response headers start)", http, (m, t) => m.AdmitStop, (m, t) => m.HeadersStart);
        const string D = "in-process";
        Add(D, "SubmitAsync -> prefill step starts", direct, (m, t) => t.Start, (m, t) => m.StepStart);
        Add(D, "prefill step (forward pass)", direct, (m, t) => m.StepStart, (m, t) => m.StepStop);
        Add(D, "step ends -> first chunk read (sampling, actor, channel)", direct, (m, t) => m.StepStop, (m, t) => First(t));
        Add(D, "TTFT (SubmitAsync -> first chunk)", direct, (m, t) => t.Start, (m, t) => First(t));
        return list;
    }
}

/// <summary>Loopback TCP round trip (1 byte each way, Nagle off): the floor under any HTTP exchange on this machine.</summary>
internal static class Loopback
{
    public static async Task<Latency> RoundTripAsync(int count)
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        using var client = new TcpClient { NoDelay = true };
        var accept = listener.AcceptTcpClientAsync();
        await client.ConnectAsync(IPAddress.Loopback, port);
        using var server = await accept;
        server.NoDelay = true;
        var echo = Task.Run(async () =>
        {
            var s = server.GetStream();
            var b = new byte[1];
            while (await s.ReadAsync(b) == 1) await s.WriteAsync(b);
        });
        var cs = client.GetStream();
        var buf = new byte[1];
        var ms = new List<double>(count);
        for (int i = -100; i < count; i++)
        {
            long t0 = Stopwatch.GetTimestamp();
            await cs.WriteAsync(buf);
            if (await cs.ReadAsync(buf) != 1) throw new IOException("loopback echo closed");
            if (i >= 0) ms.Add(Stats.Ms(t0, Stopwatch.GetTimestamp()));
        }
        client.Close();
        try
        {
            await echo;
        }
        catch (IOException)
        {
            // the echo side sees the close
        }
        return Latency.Of(ms);
    }
}
