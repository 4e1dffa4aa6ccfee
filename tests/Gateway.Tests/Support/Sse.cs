using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;

namespace MoeServer.Gateway.Tests.Support;

/// <summary>Raw Server-Sent Events over HttpClient, checking the framing OpenAI clients rely on.</summary>
public static class Sse
{
    public static HttpRequestMessage Post(string path, object body) => new(HttpMethod.Post, path)
    {
        Content = new StringContent(JsonSerializer.Serialize(body), Encoding.UTF8, "application/json"),
    };

    /// <summary>Sends a streaming request and returns the response with headers read (body not yet).</summary>
    public static async Task<HttpResponseMessage> StartAsync(HttpClient http, string path, object body, CancellationToken ct = default)
    {
        var response = await http.SendAsync(Post(path, body), HttpCompletionOption.ResponseHeadersRead, ct);
        return response;
    }

    /// <summary>Yields each event's data as it arrives; asserts every event is exactly one "data: ..." line followed
    /// by a blank line.</summary>
    public static async IAsyncEnumerable<string> EventsAsync(HttpResponseMessage response,
        [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct = default)
    {
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        using var stream = await response.Content.ReadAsStreamAsync(ct);
        using var reader = new StreamReader(stream, Encoding.UTF8);
        while (await reader.ReadLineAsync(ct) is { } line)
        {
            Assert.StartsWith("data: ", line);
            string blank = await reader.ReadLineAsync(ct) ?? throw new Xunit.Sdk.XunitException($"stream ended inside an event after: {line}");
            Assert.Equal("", blank);
            yield return line["data: ".Length..];
        }
    }

    /// <summary>The whole stream: the JSON events before [DONE]; asserts [DONE] is the last event.</summary>
    public static async Task<List<JsonElement>> ReadAllAsync(HttpResponseMessage response)
    {
        var events = new List<JsonElement>();
        bool done = false;
        await foreach (var data in EventsAsync(response))
        {
            Assert.False(done, "an event after [DONE]");
            if (data == "[DONE]")
            {
                done = true;
                continue;
            }
            events.Add(JsonDocument.Parse(data).RootElement.Clone());
        }
        Assert.True(done, "the stream did not end with data: [DONE]");
        return events;
    }

    public static MediaTypeHeaderValue Json => new("application/json");
}
