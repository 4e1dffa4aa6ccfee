using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.SignalR.Client;

namespace MoeServer.Gateway.Tests.Fuzzing;

/// <summary>What a leak run did, by kind of request and ending.</summary>
public sealed class LeakReport
{
    public ConcurrentDictionary<string, int> Endings { get; } = new();
    public ConcurrentBag<string> Problems { get; } = [];
    public TimeSpan Elapsed { get; set; }

    public void Count(string ending) => Endings.AddOrUpdate(ending, 1, (_, n) => n + 1);

    public string Summary() => $"{Endings.Values.Sum()} requests in {Elapsed.TotalSeconds:0.0} s; " +
        string.Join(", ", Endings.OrderByDescending(kv => kv.Value).Select(kv => $"{kv.Key}: {kv.Value}")) + $"; {Problems.Count} problems";
}

/// <summary>
/// Requests that end every way a client can end them, seeded: read to the end (whole and streamed, n up to 3),
/// cancelled by the client before or while streaming, disconnected mid-stream, ended by their own deadline
/// (<c>timeout</c>), and hub streams disposed or their connection stopped mid-stream. Prompts share prefixes so the
/// prefix cache is used and evicts. What matters is afterwards: <see cref="MetricsBaseline"/>.
/// </summary>
public sealed class LeakDriver(Uri server, ulong seed)
{
    private static readonly string[] Prefixes =
    [
        "In the beginning God created the heaven and the earth. And the earth was without form, and void; and darkness was upon the face of the deep.",
        "The Jargon File is a comprehensive compendium of hacker slang illuminating many aspects of hackish tradition, folklore, and humor.",
        "And God said, Let there be light: and there was light. And God saw the light, that it was good: and God divided the light from the darkness.",
    ];

    public async Task<LeakReport> RunAsync(int requests, int concurrency, int from = 0, Action<string>? progress = null)
    {
        var report = new LeakReport();
        var clock = Stopwatch.StartNew();
        using var http = new HttpClient { BaseAddress = server, Timeout = TimeSpan.FromSeconds(120) };
        int done = 0;
        await Parallel.ForEachAsync(Enumerable.Range(from, requests), new ParallelOptions { MaxDegreeOfParallelism = concurrency }, async (i, _) =>
        {
            var rng = new Random(HashCode.Combine(seed, i));
            string ending;
            try
            {
                ending = await OneAsync(http, rng, i).ConfigureAwait(false);
            }
            catch (Exception e) when (e is HttpRequestException or IOException or TaskCanceledException or InvalidOperationException
                                          or Microsoft.AspNetCore.SignalR.HubException)
            {
                ending = "failed";
                report.Problems.Add($"request {i}: {e.GetType().Name}: {e.Message}");
            }
            report.Count(ending);
            int n = Interlocked.Increment(ref done);
            if (n % 1000 == 0) progress?.Invoke($"{n}/{requests} requests, {clock.Elapsed.TotalSeconds:0} s");
        }).ConfigureAwait(false);
        report.Elapsed = clock.Elapsed;
        return report;
    }

    private async Task<string> OneAsync(HttpClient http, Random rng, int i)
    {
        string prompt = Prefixes[rng.Next(Prefixes.Length)] + " " + i.ToString(System.Globalization.CultureInfo.InvariantCulture);
        bool chat = rng.Next(2) == 0;
        double kind = rng.NextDouble();
        int maxTokens = rng.Next(1, 24);
        int n = rng.NextDouble() < 0.15 ? rng.Next(2, 4) : 1;
        if (kind < 0.25) return await WholeAsync(http, Body(chat, prompt, maxTokens, n, stream: false), chat).ConfigureAwait(false);
        if (kind < 0.45) return await StreamAsync(http, Body(chat, prompt, maxTokens, n, stream: true), chat, cancelAfterEvents: null).ConfigureAwait(false);
        // Requests the client ends early ask for long generations: one that is not cancelled at once holds the engine for
        // seconds, and a few hundred of them keep it busy well past the baseline's wait.
        if (kind < 0.60) return await StreamAsync(http, Body(chat, prompt, LongGeneration, n, stream: true), chat, cancelAfterEvents: rng.Next(0, 6)).ConfigureAwait(false);
        if (kind < 0.70) return await CancelledWholeAsync(http, Body(chat, prompt, LongGeneration, n, stream: false), chat, TimeSpan.FromMilliseconds(rng.Next(0, 40))).ConfigureAwait(false);
        if (kind < 0.80)
        {
            // Its own deadline ends it: 408 before anything was sent, or an error event after streaming began.
            bool stream = rng.Next(2) == 0;
            var body = Body(chat, prompt, 200, n, stream) + $",\"timeout\":{(0.001 + rng.NextDouble() * 0.05).ToString(System.Globalization.CultureInfo.InvariantCulture)}";
            return stream ? await StreamAsync(http, body, chat, null).ConfigureAwait(false) : await WholeAsync(http, body, chat).ConfigureAwait(false);
        }
        return await HubAsync(rng, chat, prompt, maxTokens).ConfigureAwait(false);
    }

    private const int LongGeneration = 1500;

    private static string Body(bool chat, string prompt, int maxTokens, int n, bool stream)
    {
        string input = chat
            ? $"\"messages\":[{{\"role\":\"user\",\"content\":{JsonSerializer.Serialize(prompt)}}}]"
            : $"\"prompt\":{JsonSerializer.Serialize(prompt)}";
        return $"{{{input},\"max_tokens\":{maxTokens},\"n\":{n},\"temperature\":0.8,\"stream\":{(stream ? "true" : "false")}";
    }

    private static StringContent Json(string bodyWithoutClose) => new(bodyWithoutClose + "}", Encoding.UTF8, "application/json");

    private static string Path(bool chat) => chat ? "/v1/chat/completions" : "/v1/completions";

    private static async Task<string> WholeAsync(HttpClient http, string body, bool chat)
    {
        using var r = await http.PostAsync(Path(chat), Json(body)).ConfigureAwait(false);
        string text = await r.Content.ReadAsStringAsync().ConfigureAwait(false);
        return r.StatusCode switch
        {
            HttpStatusCode.OK => "whole",
            HttpStatusCode.RequestTimeout => "deadline 408",
            _ => throw new InvalidOperationException($"{(int)r.StatusCode}: {text}"),
        };
    }

    private static async Task<string> CancelledWholeAsync(HttpClient http, string body, bool chat, TimeSpan after)
    {
        using var cts = new CancellationTokenSource(after);
        try
        {
            using var r = await http.PostAsync(Path(chat), Json(body), cts.Token).ConfigureAwait(false);
            await r.Content.ReadAsStringAsync(cts.Token).ConfigureAwait(false);
            return "whole (cancel too late)";
        }
        catch (OperationCanceledException) when (cts.IsCancellationRequested)
        {
            return "cancelled before the answer";
        }
    }

    private static async Task<string> StreamAsync(HttpClient http, string body, bool chat, int? cancelAfterEvents)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, Path(chat)) { Content = Json(body) };
        using var r = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead).ConfigureAwait(false);
        if (r.StatusCode == HttpStatusCode.RequestTimeout) return "deadline 408";
        if (r.StatusCode != HttpStatusCode.OK) throw new InvalidOperationException($"{(int)r.StatusCode}: {await r.Content.ReadAsStringAsync().ConfigureAwait(false)}");
        await using var stream = await r.Content.ReadAsStreamAsync().ConfigureAwait(false);
        using var reader = new StreamReader(stream);
        int events = 0;
        bool error = false;
        while (await reader.ReadLineAsync().ConfigureAwait(false) is { } line)
        {
            if (line.Length == 0) continue;
            if (line == "data: [DONE]") return error ? "deadline in stream" : "streamed";
            if (line.Contains("\"error\"", StringComparison.Ordinal)) error = true;
            if (cancelAfterEvents is { } k && ++events > k) return "disconnected mid-stream"; // disposing the response closes the connection
        }
        throw new InvalidOperationException("the stream ended without [DONE]");
    }

    private async Task<string> HubAsync(Random rng, bool chat, string prompt, int maxTokens)
    {
        await using var connection = new HubConnectionBuilder().WithUrl(new Uri(server, "/hubs/chat")).Build();
        await connection.StartAsync().ConfigureAwait(false);
        object request = chat
            ? new Dictionary<string, object> { ["messages"] = new[] { new Dictionary<string, string> { ["role"] = "user", ["content"] = prompt } }, ["maxTokens"] = 48 + maxTokens, ["temperature"] = 0.8 }
            : new Dictionary<string, object> { ["prompt"] = prompt, ["maxTokens"] = 48 + maxTokens, ["temperature"] = 0.8 };
        int stopAfter = rng.Next(0, 8);
        int how = rng.Next(3); // 0: read to the end, 1: dispose the stream, 2: stop the connection
        if (how != 0) ((Dictionary<string, object>)request)["maxTokens"] = LongGeneration;
        using var cts = new CancellationTokenSource();
        int items = 0;
        try
        {
            await foreach (var _ in connection.StreamAsyncCore<object>(chat ? "Chat" : "Generate", [request], cts.Token).ConfigureAwait(false))
            {
                if (how != 0 && ++items > stopAfter)
                {
                    if (how == 1)
                    {
                        await cts.CancelAsync().ConfigureAwait(false);
                        return "hub stream disposed";
                    }
                    await connection.StopAsync().ConfigureAwait(false);
                    return "hub connection stopped";
                }
            }
        }
        catch (OperationCanceledException) when (cts.IsCancellationRequested)
        {
            return "hub stream disposed";
        }
        return "hub streamed";
    }
}
