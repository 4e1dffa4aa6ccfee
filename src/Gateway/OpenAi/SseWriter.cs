using System.Buffers;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Http.Features;

namespace MoeServer.Gateway.OpenAi;

/// <summary>Server-Sent Events as OpenAI streams them: <c>data: {json}</c> events, flushed one by one, ending with
/// <c>data: [DONE]</c>.</summary>
internal sealed class SseWriter
{
    private static readonly byte[] DataPrefix = "data: "u8.ToArray();
    private static readonly byte[] EventEnd = "\n\n"u8.ToArray();
    private static readonly byte[] Done = "data: [DONE]\n\n"u8.ToArray();
    private readonly HttpResponse _response;

    private SseWriter(HttpResponse response) => _response = response;

    /// <summary>Sends the status and headers at once: the client learns its request was admitted (it may be queued)
    /// before the first token.</summary>
    public static async Task<SseWriter> StartAsync(HttpContext ctx)
    {
        var r = ctx.Response;
        r.StatusCode = StatusCodes.Status200OK;
        r.ContentType = "text/event-stream; charset=utf-8";
        r.Headers.CacheControl = "no-cache";
        r.Headers["X-Accel-Buffering"] = "no";
        ctx.Features.Get<IHttpResponseBodyFeature>()?.DisableBuffering();
        await r.StartAsync(ctx.RequestAborted).ConfigureAwait(false);
        return new SseWriter(r);
    }

    public async Task WriteAsync<T>(T payload, CancellationToken ct)
    {
        var body = _response.BodyWriter;
        body.Write(DataPrefix);
        using (var json = new Utf8JsonWriter(body))
            JsonSerializer.Serialize(json, payload, OpenAiJson.Options);
        body.Write(EventEnd);
        await body.FlushAsync(ct).ConfigureAwait(false);
    }

    public async Task DoneAsync(CancellationToken ct)
    {
        await _response.BodyWriter.WriteAsync(Done, ct).ConfigureAwait(false);
        await _response.BodyWriter.FlushAsync(ct).ConfigureAwait(false);
    }
}
