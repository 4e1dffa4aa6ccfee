using System.Net.WebSockets;
using System.Text;
using System.Text.Json;
using CsCheck;
using Microsoft.AspNetCore.SignalR;
using Microsoft.AspNetCore.SignalR.Client;
using Microsoft.Extensions.DependencyInjection;

namespace MoeServer.Gateway.Tests.Fuzzing;

/// <summary>How one hub case is sent.</summary>
public enum HubWay
{
    /// <summary>The official client, JSON protocol, the argument as a JSON object graph.</summary>
    Json,
    /// <summary>The official client, MessagePack protocol, the same graph as a MessagePack map.</summary>
    MessagePack,
    /// <summary>Hand-written JSON-protocol frames over a raw WebSocket: arguments exactly as generated (NaN, deep
    /// nesting, wrong types, invalid JSON), wrong argument counts, unknown methods, invalid UTF-8.</summary>
    RawFrames,
}

/// <summary>One hub case's result: the tally's label and, when the rules were broken, what happened.</summary>
public sealed record HubResult(string Outcome, string? Violation);

/// <summary>
/// Fuzzes the chat hub's methods (<c>Generate</c>, <c>Chat</c>) with the official SignalR client over both protocols
/// and with raw frames. Every call must end with a valid stream (its final chunk has a finish reason), a
/// <see cref="HubException"/> from our code (an invalid field, named), or, for frames the protocol cannot parse, the
/// server closing the connection. A hub error that says "unexpected error" is an exception that escaped our code.
/// Some calls are disposed or disconnected mid-stream on purpose.
/// </summary>
public sealed class HubFuzzer(Uri server, HttpCaseGenerator cases, ulong seed)
{
    private const char RecordSeparator = '\u001e';

    /// <summary>Raw frames sent and received (to replay one case by hand).</summary>
    public Action<string>? Trace { get; init; }

    public async Task<HubResult> RunAsync(int index, TimeSpan timeout)
    {
        var pcg = new PCG((uint)index, seed ^ 0x5851F42D4C957F2DUL);
        var (json, chat, notes) = cases.HubArgument(index);
        double way = FuzzRandom.Uniform(pcg);
        int cancelAfter = FuzzRandom.Uniform(pcg) < 0.15 ? FuzzRandom.Int(pcg, 0, 3) : -1;
        string method = chat ? "Chat" : "Generate";
        string how = way < 0.35 ? "raw frames" : way < 0.7 ? "json" : "msgpack";
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            if (way < 0.35) return await RawAsync(pcg, method, json, cancelAfter, cts.Token).ConfigureAwait(false);
            // Over MessagePack the server binds members by their C# names (SignalR's contractless resolver), not camelCase.
            bool messagePack = way >= 0.7;
            object? argument = ToGraph(json, pascalCase: messagePack, out string? why);
            if (argument is null && why is not null) return await RawAsync(pcg, method, json, cancelAfter, cts.Token).ConfigureAwait(false);
            return await ClientAsync(messagePack ? HubWay.MessagePack : HubWay.Json, method, argument, cancelAfter, cts.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cts.IsCancellationRequested)
        {
            return new HubResult("hang", $"hub {method} over {how} did not answer within {timeout.TotalSeconds:0} s ({notes}; cancel after {cancelAfter}): {Preview(json)}");
        }
    }

    private async Task<HubResult> ClientAsync(HubWay way, string method, object? argument, int cancelAfter, CancellationToken ct)
    {
        var builder = new HubConnectionBuilder().WithUrl(new Uri(server, "/hubs/chat"));
        if (way == HubWay.MessagePack) builder.AddMessagePackProtocol();
        await using var connection = builder.Build();
        await connection.StartAsync(ct).ConfigureAwait(false);
        string label = way == HubWay.Json ? "hub json" : "hub msgpack";
        using var callCts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        int chunks = 0;
        bool finished = false;
        try
        {
            await foreach (var item in connection.StreamAsyncCore<object>(method, [argument], callCts.Token).ConfigureAwait(false))
            {
                chunks++;
                if (HasFinishReason(item)) finished = true;
                if (cancelAfter >= 0 && chunks > cancelAfter)
                {
                    if (cancelAfter % 2 == 0) await callCts.CancelAsync().ConfigureAwait(false); // dispose the stream
                    else await connection.StopAsync(CancellationToken.None).ConfigureAwait(false); // disconnect
                    return new HubResult($"{label} cancelled", null);
                }
            }
        }
        catch (HubException e)
        {
            return Refused(label, e.Message, argument);
        }
        catch (OperationCanceledException) when (callCts.IsCancellationRequested && !ct.IsCancellationRequested)
        {
            return new HubResult($"{label} cancelled", null);
        }
        return finished
            ? new HubResult($"{label} stream", null)
            : new HubResult($"{label} unfinished", $"{method} stream ended after {chunks} chunks without a finish reason: {Preview(JsonSerializer.Serialize(argument))}");
    }

    private static HubResult Refused(string label, string message, object? argument)
    {
        // SignalR's generic text for an exception that escaped the hub method (EnableDetailedErrors = false).
        if (message.Contains("unexpected error", StringComparison.OrdinalIgnoreCase))
            return new HubResult($"{label} server error", $"hub error from an unhandled exception: {message} for {Preview(JsonSerializer.Serialize(argument))}");
        return new HubResult($"{label} refused", null);
    }

    private static bool HasFinishReason(object? item) => item switch
    {
        JsonElement e => e.ValueKind == JsonValueKind.Object && e.TryGetProperty("finishReason", out var f) && f.ValueKind == JsonValueKind.String,
        IDictionary<object, object> d => d.TryGetValue("FinishReason", out var f) && f is string || d.TryGetValue("finishReason", out var g) && g is string,
        _ => false,
    };

    /// <summary>Hand-written JSON-protocol frames over a raw WebSocket (no negotiation).</summary>
    private async Task<HubResult> RawAsync(PCG pcg, string method, string json, int cancelAfter, CancellationToken ct)
    {
        using var ws = new ClientWebSocket();
        var uri = new UriBuilder(server) { Scheme = "ws", Path = "/hubs/chat" }.Uri;
        await ws.ConnectAsync(uri, ct).ConfigureAwait(false);
        await SendTextAsync(ws, "{\"protocol\":\"json\",\"version\":1}" + RecordSeparator, ct).ConfigureAwait(false);
        string handshake = await ReceiveFrameAsync(ws, ct).ConfigureAwait(false) ?? "";
        if (handshake.Contains("error", StringComparison.Ordinal)) return new HubResult("raw handshake refused", $"handshake refused: {handshake}");

        int shape = FuzzRandom.Int(pcg, 0, 9);
        string frame = shape switch
        {
            0 => $"{{\"type\":4,\"invocationId\":\"1\",\"target\":\"{method}\",\"arguments\":[]}}",
            1 => $"{{\"type\":4,\"invocationId\":\"1\",\"target\":\"{method}\",\"arguments\":[{json},{json}]}}",
            2 => $"{{\"type\":4,\"invocationId\":\"1\",\"target\":\"NoSuchMethod\",\"arguments\":[{json}]}}",
            3 => $"{{\"type\":1,\"invocationId\":\"1\",\"target\":\"{method}\",\"arguments\":[{json}]}}", // a streaming method invoked as non-streaming
            4 => $"{{\"type\":4,\"invocationId\":\"1\",\"target\":\"{method}\",\"arguments\":[{FuzzRandom.Pick(pcg, "null", "\"text\"", "7", "[1,2]", "true", "1e999")}]}}",
            5 => $"{{\"type\":4,\"invocationId\":{FuzzRandom.Pick(pcg, "1", "null", "[]", "\"\"")},\"target\":\"{method}\",\"arguments\":[{json}]}}",
            _ => $"{{\"type\":4,\"invocationId\":\"1\",\"target\":\"{method}\",\"arguments\":[{json}]}}",
        };
        byte[] bytes = Encoding.UTF8.GetBytes(frame + RecordSeparator);
        if (FuzzRandom.Uniform(pcg) < 0.1) bytes = [.. bytes[..(bytes.Length / 2)], 0xFF, 0xFE, .. bytes[(bytes.Length / 2)..]];
        Trace?.Invoke("sent: " + Preview(frame));
        await ws.SendAsync(bytes, WebSocketMessageType.Text, true, ct).ConfigureAwait(false);
        // SignalR answers nothing to an invocation without a usable id (it is fire-and-forget by the protocol): then a
        // well-formed call on the same connection must still be answered.
        string awaited = "1";
        if (shape == 5 && !frame.StartsWith("{\"type\":4,\"invocationId\":1,", StringComparison.Ordinal))
        {
            awaited = "probe";
            await SendTextAsync(ws, "{\"type\":4,\"invocationId\":\"probe\",\"target\":\"Generate\",\"arguments\":[{\"prompt\":\"hi\",\"maxTokens\":1}]}" + RecordSeparator, ct).ConfigureAwait(false);
        }

        int items = 0;
        while (true)
        {
            string? message = await ReceiveFrameAsync(ws, ct).ConfigureAwait(false);
            Trace?.Invoke("received: " + (message is null ? "(closed)" : Preview(message)));
            if (message is null) return new HubResult("raw closed", null); // the protocol could not parse what was sent
            if (message.Length == 0) continue;
            foreach (string m in message.Split(RecordSeparator, StringSplitOptions.RemoveEmptyEntries))
            {
                using var doc = JsonDocument.Parse(m);
                var root = doc.RootElement;
                int type = root.GetProperty("type").GetInt32();
                string? id = root.TryGetProperty("invocationId", out var idElement) && idElement.ValueKind == JsonValueKind.String ? idElement.GetString() : null;
                if (type is 2 or 3 && id != awaited) continue; // the answer to a call without a usable id, if any
                if (type == 2)
                {
                    items++;
                    if (cancelAfter >= 0 && items > cancelAfter)
                    {
                        // CancelInvocation, then leave: the server must free the generation.
                        await SendTextAsync(ws, $"{{\"type\":5,\"invocationId\":\"{awaited}\"}}" + RecordSeparator, ct).ConfigureAwait(false);
                        await ws.CloseOutputAsync(WebSocketCloseStatus.NormalClosure, null, ct).ConfigureAwait(false);
                        return new HubResult("raw cancelled", null);
                    }
                    continue;
                }
                if (type == 3)
                {
                    if (root.TryGetProperty("error", out var error))
                    {
                        string text = error.GetString() ?? "";
                        return text.Contains("unexpected error", StringComparison.OrdinalIgnoreCase)
                            ? new HubResult("raw server error", $"hub error from an unhandled exception: {text} for frame {Preview(frame)}")
                            : new HubResult("raw refused", null);
                    }
                    return new HubResult("raw stream", null);
                }
                if (type == 7) return new HubResult("raw closed", null);
            }
        }
    }

    private static async Task SendTextAsync(ClientWebSocket ws, string text, CancellationToken ct) =>
        await ws.SendAsync(Encoding.UTF8.GetBytes(text), WebSocketMessageType.Text, true, ct).ConfigureAwait(false);

    private static async Task<string?> ReceiveFrameAsync(ClientWebSocket ws, CancellationToken ct)
    {
        var buffer = new byte[64 * 1024];
        using var message = new MemoryStream();
        while (true)
        {
            WebSocketReceiveResult r;
            try
            {
                r = await ws.ReceiveAsync(buffer, ct).ConfigureAwait(false);
            }
            catch (WebSocketException)
            {
                return null;
            }
            if (r.MessageType == WebSocketMessageType.Close) return null;
            message.Write(buffer, 0, r.Count);
            if (r.EndOfMessage) return Encoding.UTF8.GetString(message.ToArray());
        }
    }

    /// <summary>The JSON text as plain objects (dictionaries, lists, numbers, strings) for the typed client; null with a
    /// reason when it is not JSON the client could send as an object graph (it goes as raw frames then).</summary>
    private static object? ToGraph(string json, bool pascalCase, out string? why)
    {
        why = null;
        try
        {
            using var doc = JsonDocument.Parse(json, new JsonDocumentOptions { MaxDepth = 60 });
            return Convert(doc.RootElement, pascalCase);
        }
        catch (JsonException e)
        {
            why = e.Message;
            return null;
        }
    }

    private static object? Convert(JsonElement e, bool pascalCase) => e.ValueKind switch
    {
        JsonValueKind.Object => e.EnumerateObject().GroupBy(p => pascalCase && p.Name.Length > 0 ? char.ToUpperInvariant(p.Name[0]) + p.Name[1..] : p.Name)
            .ToDictionary(g => g.Key, g => Convert(g.Last().Value, pascalCase)),
        JsonValueKind.Array => e.EnumerateArray().Select(x => Convert(x, pascalCase)).ToList(),
        JsonValueKind.String => e.GetString(),
        JsonValueKind.Number => e.TryGetInt64(out long l) ? l : e.GetDouble(),
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        _ => null,
    };

    private static string Preview(string s) => s.Length <= 300 ? s : s[..300] + $"... ({s.Length} chars)";
}
