using System.Net;
using System.Text;
using System.Text.Json;
using MoeServer.Gateway.Tests.Support;

namespace MoeServer.Gateway.Tests;

/// <summary>Raw HTTP against a real Kestrel: SSE framing, usage chunks, every refusal's status and OpenAI-shaped body,
/// request ids, and what a client that goes away leaves behind (nothing).</summary>
public sealed class HttpApiTests(SharedServer shared) : IClassFixture<SharedServer>
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
        Assert.Equal(JsonValueKind.String, error.GetProperty("type").ValueKind);
        Assert.True(error.TryGetProperty("param", out _), "error.param is missing (OpenAI sends it, null or not)");
        Assert.True(error.TryGetProperty("code", out _), "error.code is missing (OpenAI sends it, null or not)");
        return error;
    }

    [Fact]
    public async Task Streamed_completion_is_framed_as_sse_and_ends_with_usage_then_done()
    {
        using var r = await Sse.StartAsync(Server.Http, "/v1/completions", new
        {
            prompt = "Streaming test",
            max_tokens = 8,
            temperature = 0,
            stream = true,
            stream_options = new { include_usage = true },
        });
        Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        var events = await Sse.ReadAllAsync(r);
        var want = await Reference.GreedyAsync(Server.Engine, Reference.Encode("Streaming test"), 8);

        var usage = events[^1];
        Assert.Equal(0, usage.GetProperty("choices").GetArrayLength());
        Assert.Equal(want.Tokens, usage.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        var chunks = events[..^1];
        Assert.All(chunks, c =>
        {
            Assert.Equal("text_completion", c.GetProperty("object").GetString());
            Assert.StartsWith("cmpl-", c.GetProperty("id").GetString());
        });
        Assert.Equal(want.Text, string.Concat(chunks.Select(c => c.GetProperty("choices")[0].GetProperty("text").GetString())));
        Assert.Equal(want.Finish, chunks[^1].GetProperty("choices")[0].GetProperty("finish_reason").GetString());
        Assert.All(chunks[..^1], c => Assert.Equal(JsonValueKind.Null, c.GetProperty("choices")[0].GetProperty("finish_reason").ValueKind));
    }

    [Fact]
    public async Task Streamed_chat_opens_with_the_role_and_closes_with_a_finish_chunk()
    {
        using var r = await Sse.StartAsync(Server.Http, "/v1/chat/completions", new
        {
            messages = new[] { new { role = "user", content = "Hi there" } },
            max_tokens = 6,
            temperature = 0,
            stream = true,
        });
        var events = await Sse.ReadAllAsync(r);
        Assert.All(events, e => Assert.Equal("chat.completion.chunk", e.GetProperty("object").GetString()));
        Assert.Equal("assistant", events[0].GetProperty("choices")[0].GetProperty("delta").GetProperty("role").GetString());
        var last = events[^1].GetProperty("choices")[0];
        Assert.Equal("length", last.GetProperty("finish_reason").GetString());
        Assert.False(events.Any(e => e.TryGetProperty("usage", out var u) && u.ValueKind != JsonValueKind.Null), "usage without include_usage");
        var want = await Reference.GreedyAsync(Server.Engine, Reference.EncodeChat(("user", "Hi there")), 6);
        string text = string.Concat(events.Select(e => e.GetProperty("choices")[0].GetProperty("delta"))
            .Select(d => d.TryGetProperty("content", out var c) ? c.GetString() : ""));
        Assert.Equal(want.Text, text);
    }

    [Fact]
    public async Task N_choices_and_a_batch_of_prompts_come_back_indexed_in_order()
    {
        using var r = await Server.Http.PostAsync("/v1/completions", Json("""
            {"prompt": ["alpha beta", "gamma"], "n": 2, "max_tokens": 5, "temperature": 0}
            """));
        Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        var root = JsonDocument.Parse(await r.Content.ReadAsStringAsync()).RootElement;
        var choices = root.GetProperty("choices");
        Assert.Equal(4, choices.GetArrayLength());
        var a = await Reference.GreedyAsync(Server.Engine, Reference.Encode("alpha beta"), 5);
        var g = await Reference.GreedyAsync(Server.Engine, Reference.Encode("gamma"), 5);
        string[] want = [a.Text, a.Text, g.Text, g.Text];
        for (int i = 0; i < 4; i++)
        {
            Assert.Equal(i, choices[i].GetProperty("index").GetInt32());
            Assert.Equal(want[i], choices[i].GetProperty("text").GetString());
        }
        Assert.Equal(2 * a.Tokens + 2 * g.Tokens, root.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
    }

    [Fact]
    public async Task Token_id_prompts_stop_strings_and_seeded_sampling_work()
    {
        var ids = Reference.Encode("seeded sampling");
        string body = JsonSerializer.Serialize(new { prompt = ids, max_tokens = 12, temperature = 0.9, top_p = 0.9, seed = 42 });
        using var r1 = await Server.Http.PostAsync("/v1/completions", Json(body));
        using var r2 = await Server.Http.PostAsync("/v1/completions", Json(body));
        string t1 = JsonDocument.Parse(await r1.Content.ReadAsStringAsync()).RootElement.GetProperty("choices")[0].GetProperty("text").GetString()!;
        string t2 = JsonDocument.Parse(await r2.Content.ReadAsStringAsync()).RootElement.GetProperty("choices")[0].GetProperty("text").GetString()!;
        Assert.Equal(t1, t2); // same seed, same text

        var greedy = await Reference.GreedyAsync(Server.Engine, ids, 12);
        Assert.True(greedy.Text.Length > 4, "greedy text too short to cut: " + greedy.Text);
        string stop = greedy.Text.Substring(2, 2);
        using var r3 = await Server.Http.PostAsync("/v1/completions", Json(JsonSerializer.Serialize(new { prompt = ids, max_tokens = 12, temperature = 0, stop })));
        var choice = JsonDocument.Parse(await r3.Content.ReadAsStringAsync()).RootElement.GetProperty("choices")[0];
        Assert.Equal("stop", choice.GetProperty("finish_reason").GetString());
        Assert.Equal(greedy.Text[..greedy.Text.IndexOf(stop, StringComparison.Ordinal)], choice.GetProperty("text").GetString());
    }

    public static TheoryData<string, string, string> InvalidFields => new()
    {
        { "/v1/completions", """{"prompt":"x","temperature":3}""", "temperature" },
        { "/v1/completions", """{"prompt":"x","temperature":"hot"}""", "temperature" },
        { "/v1/completions", """{"prompt":"x","top_p":0}""", "top_p" },
        { "/v1/completions", """{"prompt":"x","top_k":-5}""", "top_k" },
        { "/v1/completions", """{"prompt":"x","min_p":1.5}""", "min_p" },
        { "/v1/completions", """{"prompt":"x","max_tokens":0}""", "max_tokens" },
        { "/v1/completions", """{"prompt":"x","max_tokens":1.5}""", "max_tokens" },
        { "/v1/completions", """{"prompt":"x","n":0}""", "n" },
        { "/v1/completions", """{"prompt":"x","n":100}""", "n" },
        { "/v1/completions", """{"prompt":"x","presence_penalty":3}""", "presence_penalty" },
        { "/v1/completions", """{"prompt":"x","frequency_penalty":-3}""", "frequency_penalty" },
        { "/v1/completions", """{"prompt":"x","repetition_penalty":0}""", "repetition_penalty" },
        { "/v1/completions", """{"prompt":"x","logit_bias":{"abc":1}}""", "logit_bias" },
        { "/v1/completions", """{"prompt":"x","logit_bias":{"5":500}}""", "logit_bias" },
        { "/v1/completions", """{"prompt":"x","logit_bias":{"99999999":1}}""", "logit_bias" },
        { "/v1/completions", """{"prompt":"x","stop":5}""", "stop" },
        { "/v1/completions", """{"prompt":"x","stop":[""]}""", "stop" },
        { "/v1/completions", """{"prompt":"x","logprobs":25}""", "logprobs" },
        { "/v1/completions", """{"prompt":"x","timeout":-1}""", "timeout" },
        { "/v1/completions", """{"prompt":"x","stream_options":{"include_usage":true}}""", "stream_options" },
        { "/v1/completions", """{"prompt":"x","top_k_experts":0}""", "top_k_experts" },
        { "/v1/completions", """{"prompt":"x","top_k_experts":999}""", "top_k_experts" },
        { "/v1/completions", """{"prompt":"x","disabled_experts":["9999.0"]}""", "disabled_experts" },
        { "/v1/completions", """{"prompt":"x","disabled_experts":["a.b"]}""", "disabled_experts" },
        { "/v1/completions", """{"prompt":"x","disabled_experts":"0.1"}""", "disabled_experts" },
        { "/v1/completions", """{"max_tokens":3}""", "prompt" },
        { "/v1/completions", """{"prompt":[]}""", "prompt" },
        { "/v1/completions", """{"prompt":[1,"a"]}""", "prompt" },
        { "/v1/completions", """{"prompt":[99999999]}""", "prompt" },
        { "/v1/completions", """{"prompt":"x","echo":true}""", "echo" },
        { "/v1/completions", """{"prompt":"x","seed":"s"}""", "seed" },
        { "/v1/chat/completions", """{"messages":[]}""", "messages" },
        { "/v1/chat/completions", """{"max_tokens":3}""", "messages" },
        { "/v1/chat/completions", """{"messages":[{"role":"wizard","content":"x"}]}""", "messages[0].role" },
        { "/v1/chat/completions", """{"messages":[{"role":"user"}]}""", "messages[0].content" },
        { "/v1/chat/completions", """{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}""", "messages[0].content" },
        { "/v1/chat/completions", """{"messages":[{"role":"user","content":"x"}],"top_logprobs":3}""", "top_logprobs" },
        { "/v1/chat/completions", """{"messages":[{"role":"user","content":"x"}],"logprobs":true,"top_logprobs":21}""", "top_logprobs" },
        { "/v1/chat/completions", """{"messages":[{"role":"user","content":"x"}],"max_completion_tokens":-1}""", "max_tokens" },
        { "/v1/chat/completions", """{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function"}]}""", "tools" },
        { "/v1/chat/completions", """{"messages":[{"role":"user","content":"x"}],"tools":{"type":"function"}}""", "tools" },
        { "/v1/chat/completions", """{"messages":[{"role":"user","content":"x"}],"tool_choice":"required"}""", "tool_choice" },
        { "/v1/chat/completions", """{"messages":[{"role":"user","content":"x"}],"chat_template_kwargs":{"messages":[]}}""", "chat_template_kwargs" },
        { "/v1/chat/completions", """{"messages":[{"role":"user","content":"x"},{"role":"tool","content":"r"}]}""", "messages[1].tool_call_id" },
        { "/v1/chat/completions", """{"messages":[{"role":"user","content":"x"},{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{not json"}}]}]}""", "messages[1].tool_calls[0].function.arguments" },
        { "/v1/chat/completions", """{"messages":[{"role":"user","content":"x"},{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"arguments":"{}"}}]}]}""", "messages[1].tool_calls[0].function.name" },
        { "/v1/chat/completions", """{"messages":[{"role":"user","content":"x","tool_calls":[{"id":"c","function":{"name":"f"}}]}]}""", "messages[0].tool_calls" },
        // The tiny Mixtral's [INST] template raises on a tool message: the template's own message, as a 400.
        { "/v1/chat/completions", """{"messages":[{"role":"user","content":"x"},{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c","content":"r"}]}""", "messages" },
        { "/tokenize", """{}""", "prompt" },
        { "/detokenize", """{"tokens":[-1]}""", "tokens" },
    };

    [Theory]
    [MemberData(nameof(InvalidFields))]
    public async Task Every_invalid_field_is_a_400_naming_it(string path, string body, string param)
    {
        using var r = await Server.Http.PostAsync(path, Json(body));
        var error = await ErrorOf(r, HttpStatusCode.BadRequest);
        Assert.Equal("invalid_request_error", error.GetProperty("type").GetString());
        Assert.Equal(param, error.GetProperty("param").GetString());
        Assert.Contains(param.Split('[')[0], error.GetProperty("message").GetString()!, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Malformed_json_and_wrong_content_type_are_refused_clearly()
    {
        using var r1 = await Server.Http.PostAsync("/v1/completions", Json("{\"prompt\": \"x\""));
        await ErrorOf(r1, HttpStatusCode.BadRequest);
        using var r2 = await Server.Http.PostAsync("/v1/completions", new StringContent("prompt=x", Encoding.UTF8, "text/plain"));
        await ErrorOf(r2, HttpStatusCode.UnsupportedMediaType);
        using var r3 = await Server.Http.PostAsync("/v1/completions", Json("[1,2]"));
        await ErrorOf(r3, HttpStatusCode.BadRequest);
    }

    [Fact]
    public async Task A_prompt_longer_than_the_context_window_is_a_400()
    {
        int ctx = Server.Engine.Config.MaxPositionEmbeddings;
        var ids = Enumerable.Repeat(5, ctx).ToArray();
        using var r = await Server.Http.PostAsync("/v1/completions", Json(JsonSerializer.Serialize(new { prompt = ids, max_tokens = 1 })));
        var error = await ErrorOf(r, HttpStatusCode.BadRequest);
        Assert.Equal("context_length_exceeded", error.GetProperty("code").GetString());
        Assert.Contains(ctx.ToString(System.Globalization.CultureInfo.InvariantCulture), error.GetProperty("message").GetString()!, StringComparison.Ordinal);

        using var r2 = await Server.Http.PostAsync("/v1/completions", Json(JsonSerializer.Serialize(new { prompt = new[] { 5, 6 }, max_tokens = ctx })));
        var e2 = await ErrorOf(r2, HttpStatusCode.BadRequest);
        Assert.Equal("max_tokens", e2.GetProperty("param").GetString());
        Assert.Equal("context_length_exceeded", e2.GetProperty("code").GetString());
    }

    [Fact]
    public async Task An_unknown_model_is_a_400_and_an_unknown_route_a_404()
    {
        using var r = await Server.Http.PostAsync("/v1/chat/completions", Json("""{"model":"gpt-9","messages":[{"role":"user","content":"x"}]}"""));
        var error = await ErrorOf(r, HttpStatusCode.BadRequest);
        Assert.Equal("model_not_found", error.GetProperty("code").GetString());
        Assert.Equal("model", error.GetProperty("param").GetString());
        using var r2 = await Server.Http.GetAsync("/v1/embeddings");
        await ErrorOf(r2, HttpStatusCode.NotFound);
    }

    [Fact]
    public async Task An_oversize_body_is_a_413()
    {
        string big = new('a', 5 << 20); // the default limit is 4 MiB
        // Expect: 100-continue, as large uploads are sent: the client waits for the server's verdict before the body
        // (otherwise the 413 races the upload and the client may see the closed connection first).
        var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions") { Content = Json(JsonSerializer.Serialize(new { prompt = big })) };
        request.Headers.ExpectContinue = true;
        using var http = new HttpClient(new SocketsHttpHandler { Expect100ContinueTimeout = TimeSpan.FromSeconds(60) }) { BaseAddress = Server.BaseAddress };
        using var r = await http.SendAsync(request);
        var error = await ErrorOf(r, HttpStatusCode.RequestEntityTooLarge);
        Assert.Equal("request_too_large", error.GetProperty("code").GetString());
    }

    [Fact]
    public async Task Request_ids_are_honoured_or_made_and_name_the_response()
    {
        var req = new HttpRequestMessage(HttpMethod.Post, "/v1/completions") { Content = Json("""{"prompt":"x","max_tokens":2}""") };
        req.Headers.Add("x-request-id", "client-id-123");
        using var r = await Server.Http.SendAsync(req);
        Assert.Equal("client-id-123", r.Headers.GetValues("x-request-id").Single());
        var root = JsonDocument.Parse(await r.Content.ReadAsStringAsync()).RootElement;
        Assert.Equal("cmpl-client-id-123", root.GetProperty("id").GetString());

        using var r2 = await Server.Http.GetAsync("/v1/models");
        Assert.False(string.IsNullOrEmpty(r2.Headers.GetValues("x-request-id").Single()));
        var bad = new HttpRequestMessage(HttpMethod.Get, "/health");
        bad.Headers.TryAddWithoutValidation("x-request-id", "has spaces/and;more");
        using var r3 = await Server.Http.SendAsync(bad);
        Assert.NotEqual("has spaces/and;more", r3.Headers.GetValues("x-request-id").Single());
    }

    [Fact]
    public async Task Tokenize_and_detokenize_round_trip()
    {
        using var r = await Server.Http.PostAsync("/tokenize", Json("""{"prompt":"round trip text"}"""));
        var tok = JsonDocument.Parse(await r.Content.ReadAsStringAsync()).RootElement;
        var ids = tok.GetProperty("tokens").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        Assert.Equal(Reference.Encode("round trip text"), ids);
        Assert.Equal(ids.Length, tok.GetProperty("count").GetInt32());
        using var r2 = await Server.Http.PostAsync("/detokenize", Json(JsonSerializer.Serialize(new { tokens = ids })));
        Assert.Equal("round trip text", JsonDocument.Parse(await r2.Content.ReadAsStringAsync()).RootElement.GetProperty("prompt").GetString());
        using var r3 = await Server.Http.PostAsync("/tokenize", Json("""{"messages":[{"role":"user","content":"hey"}]}"""));
        var chatIds = JsonDocument.Parse(await r3.Content.ReadAsStringAsync()).RootElement.GetProperty("tokens").EnumerateArray().Select(e => e.GetInt32());
        Assert.Equal(Reference.EncodeChat(("user", "hey")), chatIds);
    }

    [Fact]
    public async Task A_client_that_disconnects_mid_stream_cancels_its_generation()
    {
        using var cts = new CancellationTokenSource();
        int ctx = Server.Engine.Config.MaxPositionEmbeddings;
        var noEos = Server.Engine.Config.EosTokenIds.ToDictionary(e => e.ToString(System.Globalization.CultureInfo.InvariantCulture), _ => -100f);
        var r = await Sse.StartAsync(Server.Http, "/v1/completions",
            new { prompt = "a long story", max_tokens = ctx - 20, temperature = 0, logit_bias = noEos, stream = true }, cts.Token);
        int seen = 0;
        await foreach (var _ in Sse.EventsAsync(r, cts.Token))
        {
            if (++seen == 3) break;
        }
        Assert.True(Server.Engine.Gauges.Running >= 1, "the generation should still be running");
        cts.Cancel();
        r.Dispose(); // closes the connection
        await Server.WaitIdleAsync(TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task A_failure_after_streaming_began_ends_with_an_error_event_then_done()
    {
        // A deadline that passes mid-generation ends the request with an error after tokens were streamed
        // (end-of-sequence is biased away so the generation cannot finish first).
        int ctx = Server.Engine.Config.MaxPositionEmbeddings;
        var noEos = Server.Engine.Config.EosTokenIds.ToDictionary(e => e.ToString(System.Globalization.CultureInfo.InvariantCulture), _ => -100f);
        using var r = await Sse.StartAsync(Server.Http, "/v1/chat/completions", new
        {
            messages = new[] { new { role = "user", content = "go on forever" } },
            max_tokens = ctx - 40,
            temperature = 0,
            logit_bias = noEos,
            stream = true,
            timeout = 0.5,
        });
        await AssertEndsWithErrorAsync(r);
        await Server.WaitIdleAsync();
    }

    private static async Task AssertEndsWithErrorAsync(HttpResponseMessage r)
    {
        Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        var events = await Sse.ReadAllAsync(r);
        Assert.True(events.Count >= 3, $"only {events.Count} events before the error");
        var error = events[^1].GetProperty("error");
        Assert.Contains("timeout", error.GetProperty("message").GetString()!, StringComparison.Ordinal);
        Assert.Equal("timeout_error", error.GetProperty("type").GetString()); // the client's own deadline, not a server fault
        Assert.Equal("timeout", error.GetProperty("code").GetString());
        Assert.True(events[..^1].All(e => e.TryGetProperty("choices", out _)));
    }
}
