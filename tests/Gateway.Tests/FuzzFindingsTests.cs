using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.SignalR;
using Microsoft.AspNetCore.SignalR.Client;
using Microsoft.Extensions.DependencyInjection;
using MoeServer.Gateway.Hubs;
using MoeServer.Gateway.Tests.Fuzzing;
using MoeServer.Gateway.Tests.Support;

namespace MoeServer.Gateway.Tests;

/// <summary>
/// Each defect the fuzz and leak tests found (issue 15), kept as a focused regression test. The tokenizer's quadratic
/// long-word path is in Kernels.Tests (LongWordTests); the deadline's final-chunk flag in Actors.Tests
/// (EngineBehaviourTests).
/// </summary>
public sealed class FuzzFindingsTests(SharedServer shared) : IClassFixture<SharedServer>
{
    private GatewayServer Server => shared.Server;

    private static StringContent Json(string json) => new(json, Encoding.UTF8, "application/json");

    private static async Task<JsonElement> ErrorOf(HttpResponseMessage r, HttpStatusCode status)
    {
        string body = await r.Content.ReadAsStringAsync();
        Assert.True(status == r.StatusCode, $"expected {(int)status}, got {(int)r.StatusCode}: {body}");
        Assert.Equal("application/json", r.Content.Headers.ContentType?.MediaType);
        var error = JsonDocument.Parse(body).RootElement.GetProperty("error");
        Assert.False(string.IsNullOrWhiteSpace(error.GetProperty("message").GetString()));
        Assert.True(error.TryGetProperty("param", out _) && error.TryGetProperty("code", out _));
        return error;
    }

    /// <summary>Was 500 server_error "generation failed": the client's own deadline is a 408 timeout_error.</summary>
    [Theory]
    [InlineData("/v1/completions", """{"prompt":"Hello","max_tokens":3000,"timeout":0.000001}""")]
    [InlineData("/v1/chat/completions", """{"messages":[{"role":"user","content":"Hi"}],"max_tokens":3000,"timeout":0.000001}""")]
    public async Task A_request_whose_deadline_passes_gets_408_timeout_error(string path, string body)
    {
        using var r = await Server.Http.PostAsync(path, Json(body));
        var error = await ErrorOf(r, HttpStatusCode.RequestTimeout);
        Assert.Equal("timeout_error", error.GetProperty("type").GetString());
        Assert.Equal("timeout", error.GetProperty("param").GetString());
        Assert.Equal("timeout", error.GetProperty("code").GetString());
        await Server.WaitIdleAsync();
    }

    /// <summary>Was 500 (TimeSpan overflow in the planner): a deadline beyond a day is a 400 naming timeout.</summary>
    [Theory]
    [InlineData("1e308")]
    [InlineData("9.2e18")]
    [InlineData("86401")]
    public async Task A_timeout_too_large_to_arm_is_400(string timeout)
    {
        using var r = await Server.Http.PostAsync("/v1/completions", Json($$"""{"prompt":"Hello","max_tokens":2,"timeout":{{timeout}}}"""));
        Assert.Equal("timeout", (await ErrorOf(r, HttpStatusCode.BadRequest)).GetProperty("param").GetString());
    }

    /// <summary>Was a 200 that generated the whole context window: prompt + max_tokens overflowed int and passed the
    /// context check.</summary>
    [Fact]
    public async Task Max_tokens_of_int_max_is_a_context_length_error_not_an_overflow()
    {
        using var r = await Server.Http.PostAsync("/v1/completions", Json("""{"prompt":"Hello","max_tokens":2147483647}"""));
        var error = await ErrorOf(r, HttpStatusCode.BadRequest);
        Assert.Equal("context_length_exceeded", error.GetProperty("code").GetString());
        Assert.Equal("max_tokens", error.GetProperty("param").GetString());
    }

    /// <summary>Was 500 (InvalidOperationException from JsonElement.GetString on a number).</summary>
    [Theory]
    [InlineData("""{"type":3}""")]
    [InlineData("""{"type":null}""")]
    [InlineData("""{"type":["text"]}""")]
    public async Task A_response_format_type_that_is_not_a_string_is_400(string format)
    {
        using var r = await Server.Http.PostAsync("/v1/chat/completions",
            Json($$"""{"messages":[{"role":"user","content":"Hi"}],"max_tokens":2,"response_format":{{format}}}"""));
        Assert.Equal("response_format", (await ErrorOf(r, HttpStatusCode.BadRequest)).GetProperty("param").GetString());
    }

    /// <summary>Was 500 (InvalidOperationException from JsonElement.GetString): JSON may escape an unpaired surrogate,
    /// which is not text; a prompt or a tool holding one is a 400, as it is in every field the deserializer reads.</summary>
    [Theory]
    [InlineData("/v1/completions", """{"prompt":"a\udc00b","max_tokens":1}""", "prompt")]
    [InlineData("/v1/completions", """{"prompt":["ok","\ud800"],"max_tokens":1}""", "prompt[1]")]
    [InlineData("/v1/chat/completions", """{"messages":[{"role":"user","content":"a\udc00b"}],"max_tokens":1}""", "messages[0].content")]
    [InlineData("/v1/chat/completions", """{"messages":[{"role":"user","content":"Hi"}],"max_tokens":1,"tools":[{"type":"function","function":{"name":"f","description":"x\udc00"}}]}""", "messages")]
    [InlineData("/v1/chat/completions", """{"messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":"","tool_calls":[{"id":"1","type":"function","function":{"name":"f","arguments":"{\"a\":\"\udc00\"}"}}]}],"max_tokens":1}""", null)]
    public async Task An_unpaired_surrogate_in_a_string_is_400_not_500(string path, string body, string? param)
    {
        using var r = await Server.Http.PostAsync(path, Json(body));
        var error = await ErrorOf(r, HttpStatusCode.BadRequest);
        if (param is not null) Assert.Equal(param, error.GetProperty("param").GetString());
    }

    /// <summary>Was an empty 405 from routing: the non-/v1 API routes answer other methods OpenAI-shaped too.</summary>
    [Theory]
    [InlineData("GET", "/tokenize")]
    [InlineData("PUT", "/detokenize")]
    [InlineData("DELETE", "/tokenize")]
    public async Task Other_methods_on_tokenize_and_detokenize_get_an_openai_shaped_405(string method, string path)
    {
        using var r = await Server.Http.SendAsync(new HttpRequestMessage(new HttpMethod(method), path) { Content = Json("{}") });
        Assert.Equal("method_not_allowed", (await ErrorOf(r, HttpStatusCode.MethodNotAllowed)).GetProperty("code").GetString());
    }

    /// <summary>Was a 500 with an IOException ("Bad chunk size data", an OverflowException inside Kestrel) escaping the
    /// handler: a chunked body whose chunk size overflows is a 400.</summary>
    [Theory]
    [InlineData("/detokenize")]
    [InlineData("/v1/completions")]
    public async Task A_chunked_body_with_an_overflowing_chunk_size_is_400(string path)
    {
        byte[] head = Encoding.ASCII.GetBytes($"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
        byte[] body = Encoding.ASCII.GetBytes("5\r\n{\"tok\r\nffffffffffff\r\nab\r\n");
        var r = await RawHttp.SendAsync(Server.BaseAddress, head, body, SendMode.Whole, TimeSpan.Zero, CancellationToken.None);
        Assert.Equal(400, r.Status);
        using var doc = JsonDocument.Parse(r.Body);
        Assert.Contains("could not be read", doc.RootElement.GetProperty("error").GetProperty("message").GetString(), StringComparison.Ordinal);
    }

    /// <summary>Stop lists of 10k entries are refused at once (400 naming stop), not scanned for every token.</summary>
    [Fact]
    public async Task A_stop_list_of_ten_thousand_entries_is_400()
    {
        string stops = JsonSerializer.Serialize(Enumerable.Range(0, 10_000).Select(i => "s" + i));
        using var r = await Server.Http.PostAsync("/v1/completions", Json($$"""{"prompt":"Hello","max_tokens":2,"stop":{{stops}}}"""));
        Assert.Equal("stop", (await ErrorOf(r, HttpStatusCode.BadRequest)).GetProperty("param").GetString());
    }

    /// <summary>Was "An unexpected error occurred" (ArgumentNullException out of the hub): a null request is refused by
    /// name.</summary>
    [Theory]
    [InlineData("Generate")]
    [InlineData("Chat")]
    public async Task A_null_hub_request_is_a_hub_exception_naming_it(string method)
    {
        await using var c = new HubConnectionBuilder().WithUrl(new Uri(Server.BaseAddress, ChatHub.Path)).Build();
        await c.StartAsync();
        var e = await Assert.ThrowsAsync<HubException>(async () =>
        {
            await foreach (var _ in c.StreamAsyncCore<object>(method, [null])) { }
        });
        Assert.Contains("request", e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("unexpected", e.Message, StringComparison.OrdinalIgnoreCase);
    }

    /// <summary>Not a defect, a guard: the fuzz's hub "hangs" were invocations without a usable id, which SignalR
    /// answers with nothing by design (the fuzzer now checks the connection still serves a call). Messages above
    /// SignalR's 64 KiB transport buffer, suspected on the way, do get their answer (here, that the prompt is too long).</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_hub_message_larger_than_64_KiB_gets_an_answer(bool messagePack)
    {
        var b = new HubConnectionBuilder().WithUrl(new Uri(Server.BaseAddress, ChatHub.Path));
        if (messagePack) b.AddMessagePackProtocol();
        await using var c = b.Build();
        await c.StartAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var request = new GenerateRequest { Prompt = string.Join(' ', Enumerable.Repeat("the word", 40_000)), MaxTokens = 2 };
        var e = await Assert.ThrowsAsync<HubException>(async () =>
        {
            await foreach (var _ in c.StreamAsync<HubTokenChunk>("Generate", request, cts.Token)) { }
        });
        Assert.Contains("context length", e.Message, StringComparison.Ordinal);
    }
}
