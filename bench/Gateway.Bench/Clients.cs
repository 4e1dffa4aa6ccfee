using System.Buffers;
using System.Diagnostics;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using MoeServer.Actors.Generation;

namespace MoeServer.Bench.Gateway;

/// <summary>Why a request counts as failed.</summary>
internal enum Failure
{
    None,
    /// <summary>The response status was not 200.</summary>
    HttpStatus,
    /// <summary>The stream carried an error event (or the engine's final chunk had finish reason error).</summary>
    ErrorEvent,
    /// <summary>The stream ended without <c>data: [DONE]</c> (or without a finish reason).</summary>
    MissingDone,
    /// <summary>The connection failed or timed out.</summary>
    Exception,
}

/// <summary>One request as its client saw it: Stopwatch timestamps of the send and of every event that carried text.</summary>
internal sealed class RequestTrace
{
    public long Start;
    public long End;
    /// <summary>Arrival of each event (HTTP) or chunk (in-process) with non-empty text, in order.</summary>
    public List<long> TextEvents { get; } = new(80);
    public int Status;
    public Failure Failure;
    public string? Error;
    public string? FinishReason;
    /// <summary>usage.completion_tokens (HTTP: the include_usage chunk; in-process: the final chunk); -1 if absent.</summary>
    public int CompletionTokens = -1;

    public bool Ok => Failure == Failure.None;
    public double TtftMs => TextEvents.Count == 0 ? double.NaN : Stats.Ms(Start, TextEvents[0]);

    /// <summary>Time per output token after the first: (last text event - first text event) / (completion tokens - 1), as
    /// vLLM's benchmark defines TPOT; unlike the event gaps it does not depend on how events are grouped into reads.</summary>
    public double TpotMs => TextEvents.Count < 2 || CompletionTokens < 2 ? double.NaN
        : Stats.Ms(TextEvents[0], TextEvents[^1]) / (CompletionTokens - 1);

    public void AddGaps(List<double> into)
    {
        for (int i = 1; i < TextEvents.Count; i++) into.Add(Stats.Ms(TextEvents[i - 1], TextEvents[i]));
    }

    public void Fail(Failure kind, string message)
    {
        if (Failure != Failure.None) return;
        Failure = kind;
        Error = message.Length > 2000 ? message[..2000] + "..." : message;
    }
}

/// <summary>
/// A streaming OpenAI client over a plain <see cref="HttpClient"/>: posts a prebuilt JSON body and reads the SSE
/// response byte by byte, timestamping each <c>data:</c> line as the read that delivered it returns (before any JSON
/// parsing), then checks the events (error events, finish reason, usage, the closing [DONE]).
/// </summary>
internal sealed class SseClient(HttpClient http, Uri endpoint)
{
    private static readonly MediaTypeHeaderValue Json = new("application/json");

    public static HttpClient NewHttpClient(Uri baseAddress) => new(new SocketsHttpHandler
    {
        UseProxy = false,
        UseCookies = false,
        AutomaticDecompression = System.Net.DecompressionMethods.None,
        MaxConnectionsPerServer = int.MaxValue,
        PooledConnectionIdleTimeout = TimeSpan.FromMinutes(10),
        PooledConnectionLifetime = Timeout.InfiniteTimeSpan,
        ConnectTimeout = TimeSpan.FromSeconds(10),
    })
    {
        BaseAddress = baseAddress,
        Timeout = TimeSpan.FromMinutes(5),
        DefaultRequestVersion = System.Net.HttpVersion.Version11,
    };

    public async Task<RequestTrace> RunAsync(byte[] body, string requestId, CancellationToken ct = default)
    {
        var trace = new RequestTrace();
        using var msg = new HttpRequestMessage(HttpMethod.Post, endpoint) { Content = new ByteArrayContent(body) };
        msg.Content.Headers.ContentType = Json;
        msg.Headers.TryAddWithoutValidation("x-request-id", requestId);
        byte[] buf = ArrayPool<byte>.Shared.Rent(16 * 1024);
        trace.Start = Stopwatch.GetTimestamp();
        try
        {
            using var resp = await http.SendAsync(msg, HttpCompletionOption.ResponseHeadersRead, ct).ConfigureAwait(false);
            trace.Status = (int)resp.StatusCode;
            if (trace.Status != 200)
            {
                string text = await resp.Content.ReadAsStringAsync(ct).ConfigureAwait(false);
                trace.Fail(Failure.HttpStatus, $"HTTP {trace.Status}: {text}");
                return trace;
            }
            await using var stream = await resp.Content.ReadAsStreamAsync(ct).ConfigureAwait(false);
            bool done = false;
            int filled = 0;
            while (!done)
            {
                if (filled == buf.Length)
                {
                    var bigger = ArrayPool<byte>.Shared.Rent(buf.Length * 2);
                    Buffer.BlockCopy(buf, 0, bigger, 0, filled);
                    ArrayPool<byte>.Shared.Return(buf);
                    buf = bigger;
                }
                int n = await stream.ReadAsync(buf.AsMemory(filled), ct).ConfigureAwait(false);
                long now = Stopwatch.GetTimestamp();
                if (n == 0) break;
                filled += n;
                int consumed = 0;
                while (!done)
                {
                    int nl = buf.AsSpan(consumed, filled - consumed).IndexOf((byte)'\n');
                    if (nl < 0) break;
                    var line = buf.AsSpan(consumed, nl);
                    consumed += nl + 1;
                    if (line.Length > 0 && line[^1] == '\r') line = line[..^1];
                    if (line.StartsWith("data:"u8)) done = OnData(trace, line[5..].TrimStart((byte)' '), now);
                }
                if (consumed > 0)
                {
                    Buffer.BlockCopy(buf, consumed, buf, 0, filled - consumed);
                    filled -= consumed;
                }
            }
            if (!done) trace.Fail(Failure.MissingDone, "the stream ended without data: [DONE]");
            else if (trace.FinishReason is null) trace.Fail(Failure.MissingDone, "no event carried a finish_reason");
        }
        catch (Exception e) when (e is HttpRequestException or IOException or TaskCanceledException or OperationCanceledException)
        {
            trace.Fail(Failure.Exception, $"{e.GetType().Name}: {e.Message}");
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buf);
            trace.End = Stopwatch.GetTimestamp();
        }
        return trace;
    }

    /// <summary>Handles one data line; true at [DONE].</summary>
    private static bool OnData(RequestTrace trace, ReadOnlySpan<byte> payload, long now)
    {
        if (payload.SequenceEqual("[DONE]"u8)) return true;
        try
        {
            var reader = new Utf8JsonReader(payload);
            using var doc = JsonDocument.ParseValue(ref reader);
            var root = doc.RootElement;
            if (root.TryGetProperty("error", out var error))
            {
                trace.Fail(Failure.ErrorEvent, "error event: " + (error.TryGetProperty("message", out var m) ? m.GetString() : error.GetRawText()));
                return false;
            }
            if (root.TryGetProperty("choices", out var choices) && choices.ValueKind == JsonValueKind.Array && choices.GetArrayLength() > 0)
            {
                var c = choices[0];
                string? text = c.TryGetProperty("text", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString()
                    : c.TryGetProperty("delta", out var d) && d.TryGetProperty("content", out var dc) && dc.ValueKind == JsonValueKind.String ? dc.GetString()
                    : null;
                if (!string.IsNullOrEmpty(text)) trace.TextEvents.Add(now);
                if (c.TryGetProperty("finish_reason", out var fr) && fr.ValueKind == JsonValueKind.String) trace.FinishReason = fr.GetString();
            }
            if (root.TryGetProperty("usage", out var usage) && usage.ValueKind == JsonValueKind.Object
                && usage.TryGetProperty("completion_tokens", out var ctok))
            {
                trace.CompletionTokens = ctok.GetInt32();
            }
        }
        catch (JsonException e)
        {
            trace.Fail(Failure.ErrorEvent, "malformed event: " + e.Message + " in " + Encoding.UTF8.GetString(payload));
        }
        return false;
    }
}

/// <summary>The same request straight into the engine (no HTTP, no JSON): what the gateway itself adds is the difference.</summary>
internal static class InProcessClient
{
    public static async Task<RequestTrace> RunAsync(MoeEngine engine, GenerationRequest request)
    {
        var trace = new RequestTrace { Start = Stopwatch.GetTimestamp(), Status = 200 };
        try
        {
            var stream = await engine.SubmitAsync(request).ConfigureAwait(false);
            await foreach (var c in stream)
            {
                long now = Stopwatch.GetTimestamp();
                if (c.Text.Length > 0) trace.TextEvents.Add(now);
                if (!c.IsFinal) continue;
                trace.FinishReason = c.FinishReason.ToString()!.ToLowerInvariant();
                trace.CompletionTokens = c.Usage?.CompletionTokens ?? -1;
                if (c.Error is not null) trace.Fail(Failure.ErrorEvent, c.Error);
            }
            if (trace.FinishReason is null) trace.Fail(Failure.MissingDone, "the stream ended without a final chunk");
        }
        catch (Exception e) when (e is InvalidOperationException or EngineOverloadedException or EngineUnavailableException or InvalidGenerationRequestException)
        {
            trace.Fail(Failure.Exception, $"{e.GetType().Name}: {e.Message}");
        }
        finally
        {
            trace.End = Stopwatch.GetTimestamp();
        }
        return trace;
    }
}
