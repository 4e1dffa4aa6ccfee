using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;

namespace MoeServer.Bench.Chaos;

/// <summary>One streamed request as its client saw it (times in seconds since the run began).</summary>
internal sealed class RequestRecord
{
    public required int Client { get; init; }
    public required int Prompt { get; init; }
    public required string Id { get; init; }
    public double Start { get; set; }
    public double End { get; set; }
    public int Status { get; set; }
    public List<double> TokenTimes { get; } = new(64);
    public List<int> TokenIds { get; } = new(64);
    public string? FinishReason { get; set; }
    /// <summary>null when the request completed; otherwise why it failed (HTTP status, error event, cut stream, timeout).</summary>
    public string? Failure { get; set; }
    /// <summary>Filled by the check against the direct loop: null (not checked), "same" or what differed.</summary>
    public string? Check { get; set; }
    public int ComparedTokens { get; set; }

    public bool Ok => Failure is null;
    public double Ttft => TokenTimes.Count == 0 ? double.NaN : TokenTimes[0] - Start;

    /// <summary>Time per output token after the first (vLLM's TPOT).</summary>
    public double Tpot => TokenTimes.Count < 2 ? double.NaN : (TokenTimes[^1] - TokenTimes[0]) / (TokenTimes.Count - 1);

    public void Fail(string why)
    {
        Failure ??= why.Length > 400 ? why[..400] + "..." : why;
    }
}

/// <summary>
/// POST /v1/chat/completions with <c>stream: true</c> and <c>logprobs: true</c>: every token arrives as its own chunk
/// with its exact bytes, from which <see cref="TokenIds"/> recovers the id. Each chunk is timestamped as it is read.
/// </summary>
internal sealed class StreamClient(HttpClient http, TokenIds ids, Func<double> clock)
{
    private static readonly MediaTypeHeaderValue Json = new("application/json");

    /// <summary>A client for streams: a whole request may take minutes while nodes fail, but never forever.</summary>
    public static HttpClient NewHttpClient(Uri baseAddress, TimeSpan requestTimeout) => new(new SocketsHttpHandler
    {
        UseProxy = false,
        UseCookies = false,
        MaxConnectionsPerServer = int.MaxValue,
        ConnectTimeout = TimeSpan.FromSeconds(10),
        PooledConnectionIdleTimeout = TimeSpan.FromMinutes(2),
    })
    {
        BaseAddress = baseAddress,
        Timeout = requestTimeout,
        DefaultRequestVersion = System.Net.HttpVersion.Version11,
    };

    /// <summary>The request; <paramref name="banned"/> get logit_bias -100 so answers run to max_tokens (as the other benches do).</summary>
    public static byte[] Body(string prompt, int maxTokens, IEnumerable<int> banned) => JsonSerializer.SerializeToUtf8Bytes(new Dictionary<string, object>
    {
        ["logit_bias"] = banned.ToDictionary(id => id.ToString(System.Globalization.CultureInfo.InvariantCulture), _ => -100),
        ["messages"] = new[] { new Dictionary<string, string> { ["role"] = "user", ["content"] = prompt } },
        ["max_tokens"] = maxTokens,
        ["temperature"] = 0,
        ["seed"] = 1,
        ["stream"] = true,
        ["logprobs"] = true,
    });

    public async Task RunAsync(RequestRecord r, byte[] body, Action<RequestRecord> onToken, CancellationToken ct)
    {
        using var msg = new HttpRequestMessage(HttpMethod.Post, "v1/chat/completions") { Content = new ByteArrayContent(body) };
        msg.Content.Headers.ContentType = Json;
        msg.Headers.TryAddWithoutValidation("x-request-id", r.Id);
        r.Start = clock();
        try
        {
            using var resp = await http.SendAsync(msg, HttpCompletionOption.ResponseHeadersRead, ct).ConfigureAwait(false);
            r.Status = (int)resp.StatusCode;
            if (r.Status != 200)
            {
                string text = await resp.Content.ReadAsStringAsync(ct).ConfigureAwait(false);
                r.Fail($"HTTP {r.Status}: {text}");
                return;
            }
            using var reader = new StreamReader(await resp.Content.ReadAsStreamAsync(ct).ConfigureAwait(false), Encoding.UTF8);
            bool done = false;
            while (!done && await reader.ReadLineAsync(ct).ConfigureAwait(false) is { } line)
            {
                if (!line.StartsWith("data:", StringComparison.Ordinal)) continue;
                string payload = line[5..].Trim();
                if (payload == "[DONE]")
                {
                    done = true;
                    break;
                }
                OnChunk(r, payload, clock(), onToken);
            }
            if (!done) r.Fail("the stream ended without data: [DONE]");
            else if (r.FinishReason is null) r.Fail("no chunk carried a finish_reason");
        }
        catch (Exception e) when (e is HttpRequestException or IOException or TaskCanceledException or OperationCanceledException)
        {
            r.Fail(ct.IsCancellationRequested ? "cancelled by the harness at shutdown" : $"{e.GetType().Name}: {e.Message}");
        }
        finally
        {
            r.End = clock();
        }
    }

    private void OnChunk(RequestRecord r, string payload, double now, Action<RequestRecord> onToken)
    {
        try
        {
            using var doc = JsonDocument.Parse(payload);
            var root = doc.RootElement;
            if (root.TryGetProperty("error", out var error))
            {
                r.Fail("error event: " + (error.TryGetProperty("message", out var m) ? m.GetString() : error.GetRawText()));
                return;
            }
            if (!root.TryGetProperty("choices", out var choices) || choices.GetArrayLength() == 0) return;
            var c = choices[0];
            if (c.TryGetProperty("logprobs", out var lp) && lp.ValueKind == JsonValueKind.Object
                && lp.TryGetProperty("content", out var content) && content.ValueKind == JsonValueKind.Array)
            {
                foreach (var entry in content.EnumerateArray())
                {
                    var bytes = entry.GetProperty("bytes").EnumerateArray().Select(b => (byte)b.GetInt32()).ToArray();
                    r.TokenIds.Add(ids.Lookup(bytes));
                    r.TokenTimes.Add(now);
                    onToken(r);
                }
            }
            if (c.TryGetProperty("finish_reason", out var fr) && fr.ValueKind == JsonValueKind.String) r.FinishReason = fr.GetString();
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
        {
            r.Fail("malformed chunk: " + e.Message);
        }
    }
}
