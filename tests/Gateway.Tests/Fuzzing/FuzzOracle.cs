using System.Text;
using System.Text.Json;

namespace MoeServer.Gateway.Tests.Fuzzing;

/// <summary>
/// The rules every answer to a fuzzed request must follow: a 4xx with an OpenAI-shaped error from our code (API
/// routes), Kestrel's own 400/408/413/414/431 with an empty body or a closed connection for what Kestrel refuses before
/// any middleware, or a valid answer (a completion, a whole SSE stream ending in [DONE]). Never a 5xx (but /ready's
/// 503, an answer by design), never a hang.
/// </summary>
public static class FuzzOracle
{
    /// <summary>Statuses Kestrel answers by itself, with an empty body, before the request reaches any middleware.</summary>
    private static readonly int[] KestrelStatuses = [400, 408, 413, 414, 431];

    /// <summary>Null when the answer follows the rules; otherwise what is wrong. <paramref name="outcome"/> names the
    /// kind of answer for the run's tally.</summary>
    public static string? Check(HttpCase c, RawResponse r, out string outcome)
    {
        if (c.Mode == SendMode.Abort)
        {
            outcome = "client aborted";
            return null;
        }
        if (r.Status == 0)
        {
            outcome = "closed";
            // Kestrel closes the connection on broken framing; a half-closed request body may end the same way.
            return c.Kind == RouteKind.Malformed || c.Mode == SendMode.Truncated ? null : "the connection closed without an answer";
        }
        outcome = r.Status.ToString(System.Globalization.CultureInfo.InvariantCulture);
        if (r.Status >= 500 && !(r.Status == 505 && c.Route == "(raw)" && r.Body.Length == 0))
        {
            if (r.Status == 503 && c.Route == "/ready") return null;
            return $"{r.Status} {Preview(r)}";
        }
        if (r.Body.Length == 0 && (KestrelStatuses.Contains(r.Status) || r.Status == 505 && c.Route == "(raw)"))
        {
            // Kestrel's own refusals (505: an HTTP version it does not speak) come before any middleware.
            outcome += " (kestrel)";
            return null;
        }
        if (c.Method == "HEAD" && r.Status is >= 400 and < 500)
        {
            outcome += " (head)";
            return null; // a HEAD answer has no body to shape
        }
        if (c.Kind == RouteKind.Malformed)
        {
            if (r.Status is >= 400 and < 500) return c.Route == "(raw)" ? null : ErrorShape(r);
            // Oversize or many headers within Kestrel's limits reach the API like any request.
            return r.Status < 300 ? ValidSuccess(c, r) : $"unexpected {r.Status} {Preview(r)}";
        }
        if (r.Status is >= 400 and < 500)
        {
            if (c.Kind == RouteKind.Node) return null; // ops and health errors have their own (JSON) shape
            return ErrorShape(r);
        }
        if (r.Status is >= 300 and < 400) return $"unexpected redirect {r.Status}";
        return c.Kind == RouteKind.Api ? ValidSuccess(c, r) : null;
    }

    /// <summary>{"error":{"message","type","param","code"}} as application/json.</summary>
    private static string? ErrorShape(RawResponse r)
    {
        string? type = r.Header("Content-Type");
        if (type is null || !type.StartsWith("application/json", StringComparison.OrdinalIgnoreCase))
            return $"{r.Status} without a JSON error (Content-Type {type ?? "none"}): {Preview(r)}";
        try
        {
            using var doc = JsonDocument.Parse(r.Body);
            if (!doc.RootElement.TryGetProperty("error", out var e) || e.ValueKind != JsonValueKind.Object)
                return $"{r.Status} body has no error object: {Preview(r)}";
            if (!e.TryGetProperty("message", out var m) || m.ValueKind != JsonValueKind.String || string.IsNullOrWhiteSpace(m.GetString()))
                return $"{r.Status} error without a message: {Preview(r)}";
            if (!e.TryGetProperty("type", out var t) || t.ValueKind != JsonValueKind.String)
                return $"{r.Status} error without a type: {Preview(r)}";
            if (!e.TryGetProperty("param", out _) || !e.TryGetProperty("code", out _))
                return $"{r.Status} error without param or code: {Preview(r)}";
            return null;
        }
        catch (JsonException)
        {
            return $"{r.Status} body is not JSON: {Preview(r)}";
        }
    }

    /// <summary>A 2xx on an API route: the whole JSON answer of its route, or a whole SSE stream.</summary>
    private static string? ValidSuccess(HttpCase c, RawResponse r)
    {
        if (!r.Complete) return $"{r.Status} answer cut short ({r.Body.Length} bytes): {Preview(r)}";
        string type = r.Header("Content-Type") ?? "";
        if (type.StartsWith("text/event-stream", StringComparison.OrdinalIgnoreCase)) return ValidStream(c, r);
        if (!type.StartsWith("application/json", StringComparison.OrdinalIgnoreCase))
            return c.Route.StartsWith("/v1/models", StringComparison.Ordinal) && r.Body.Length == 0 ? null : $"{r.Status} with Content-Type {type}";
        try
        {
            using var doc = JsonDocument.Parse(r.Body);
            var root = doc.RootElement;
            string? obj = root.TryGetProperty("object", out var o) ? o.GetString() : null;
            return c.Route switch
            {
                "/v1/completions" when obj != "text_completion" || !Finished(root) => $"not a finished text_completion: {Preview(r)}",
                "/v1/chat/completions" when obj != "chat.completion" || !Finished(root) => $"not a finished chat.completion: {Preview(r)}",
                "/tokenize" when !root.TryGetProperty("tokens", out _) => $"tokenize answer without tokens: {Preview(r)}",
                "/detokenize" when !root.TryGetProperty("prompt", out _) => $"detokenize answer without prompt: {Preview(r)}",
                _ => null,
            };
        }
        catch (JsonException e)
        {
            return $"answer is not JSON ({e.Message}): {Preview(r)}";
        }
    }

    private static bool Finished(JsonElement root) =>
        root.TryGetProperty("choices", out var choices) && choices.GetArrayLength() > 0
        && choices.EnumerateArray().All(ch => ch.TryGetProperty("finish_reason", out var f) && f.ValueKind == JsonValueKind.String);

    /// <summary>data: events, each JSON (a chunk, or an error after streaming began), ending with data: [DONE].</summary>
    private static string? ValidStream(HttpCase c, RawResponse r)
    {
        string text = Encoding.UTF8.GetString(r.Body);
        var events = text.Split("\n\n");
        if (events.Length < 2 || events[^1] != "") return $"stream does not end with a blank line: {Tail(text)}";
        if (events[^2] != "data: [DONE]") return $"stream does not end with data: [DONE]: {Tail(text)}";
        foreach (string e in events[..^2])
        {
            if (!e.StartsWith("data: ", StringComparison.Ordinal)) return $"event without data: {Tail(e)}";
            try
            {
                using var doc = JsonDocument.Parse(e["data: ".Length..]);
                var root = doc.RootElement;
                if (root.TryGetProperty("error", out var err))
                {
                    if (err.ValueKind != JsonValueKind.Object || !err.TryGetProperty("message", out _)) return $"malformed error event: {Tail(e)}";
                    continue;
                }
                string want = c.Route == "/v1/chat/completions" ? "chat.completion.chunk" : "text_completion";
                if (!root.TryGetProperty("object", out var o) || o.GetString() != want) return $"event is not a {want}: {Tail(e)}";
            }
            catch (JsonException ex)
            {
                return $"event is not JSON ({ex.Message}): {Tail(e)}";
            }
        }
        return null;
    }

    private static string Preview(RawResponse r) => Tail(r.BodyText);

    private static string Tail(string s) => s.Length <= 400 ? s : s[..400] + "...";
}
