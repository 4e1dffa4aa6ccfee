using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using MoeServer.Actors.Hosting;
using MoeServer.Gateway.Tests.Support;

namespace MoeServer.Gateway.Tests;

/// <summary>What operators rely on: metrics, readiness that follows the experts, overload and auth answers, traces.</summary>
public sealed class ServerOperationsTests
{
    private static StringContent Json(string json) => new(json, Encoding.UTF8, "application/json");

    private static double Metric(string text, string name)
    {
        var line = text.Split('\n').FirstOrDefault(l => l.StartsWith(name + " ", StringComparison.Ordinal))
            ?? throw new Xunit.Sdk.XunitException($"metric {name} not found in:\n{text}");
        return double.Parse(line[(name.Length + 1)..], System.Globalization.CultureInfo.InvariantCulture);
    }

    [Fact]
    public async Task Metrics_report_latencies_tokens_queue_kv_cache_and_per_expert_routing()
    {
        await using var server = await GatewayServer.StartAsync(TinyModel.Dir);
        using var r = await server.Http.PostAsync("/v1/completions", Json("""{"prompt":"count me","max_tokens":7,"temperature":0,"stream":true}"""));
        await r.Content.ReadAsStringAsync();
        await server.WaitIdleAsync();
        string text = await server.Http.GetStringAsync("/metrics");
        Assert.Equal(1, Metric(text, "moe_time_to_first_token_seconds_count"));
        Assert.Equal(6, Metric(text, "moe_inter_token_latency_seconds_count"));
        Assert.Equal(1, Metric(text, "moe_e2e_request_latency_seconds_count"));
        Assert.Equal(1, Metric(text, "moe_request_queue_time_seconds_count"));
        Assert.Equal(7, Metric(text, "moe_generation_tokens_total"));
        Assert.Equal(Reference.Encode("count me").Length, Metric(text, "moe_prompt_tokens_total"));
        Assert.Equal(0, Metric(text, "moe_requests_running"));
        Assert.Equal(0, Metric(text, "moe_requests_waiting"));
        Assert.Equal(0, Metric(text, "moe_kv_cache_usage_ratio"));
        Assert.True(Metric(text, "moe_kv_cache_budget_bytes") > 0);
        Assert.Contains("moe_request_finished_total{finish_reason=\"length\"} 1", text, StringComparison.Ordinal);
        // Every routed token went to top-k experts in every sparse layer: prompt + generated tokens that ran.
        var cfg = server.Engine.Config;
        double routed = text.Split('\n').Where(l => l.StartsWith("moe_expert_routed_tokens_total{", StringComparison.Ordinal))
            .Sum(l => double.Parse(l[(l.LastIndexOf(' ') + 1)..], System.Globalization.CultureInfo.InvariantCulture));
        int sparseLayers = Enumerable.Range(0, cfg.NumLayers).Count(cfg.IsSparseLayer);
        int rows = Reference.Encode("count me").Length + 6; // the 7th token is sampled but never fed back
        Assert.Equal(rows * sparseLayers * cfg.NumExpertsPerToken, routed);
        Assert.Contains("# TYPE moe_time_to_first_token_seconds histogram", text, StringComparison.Ordinal);
        // This node also hosts the experts: their work, per expert, adds up to the same rows.
        double expertRows = text.Split('\n').Where(l => l.StartsWith("moe_expert_rows_total{", StringComparison.Ordinal))
            .Sum(l => double.Parse(l[(l.LastIndexOf(' ') + 1)..], System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(routed, expertRows);
        Assert.Equal(sparseLayers * cfg.NumExperts, Metric(text, "moe_experts_resident"));
        Assert.Contains("moe_expert_compute_seconds_total{layer=", text, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Chat_requests_sharing_a_system_prompt_reuse_its_keys_and_values_by_default()
    {
        await using var server = await GatewayServer.StartAsync(TinyModel.Dir);
        const string SystemPrompt = "You are a terse assistant for the moe server test suite. Answer in as few words as you can, always.";
        var usage = new List<int>();
        var cachedReported = new List<int>();
        foreach (var question in new[] { "first question", "a second, different question" })
        {
            using var r = await server.Http.PostAsync("/v1/chat/completions", Json($$"""
                {"messages":[{"role":"system","content":"{{SystemPrompt}}"},{"role":"user","content":"{{question}}"}],"max_tokens":3,"temperature":0}
                """));
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
            using var body = System.Text.Json.JsonDocument.Parse(await r.Content.ReadAsStringAsync());
            usage.Add(body.RootElement.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
            cachedReported.Add(body.RootElement.GetProperty("usage").GetProperty("prompt_tokens_details").GetProperty("cached_tokens").GetInt32());
            await server.WaitIdleAsync();
        }
        string text = await server.Http.GetStringAsync("/metrics");
        Assert.Equal(2, Metric(text, "moe_prefix_cache_lookups_total"));
        Assert.Equal(1, Metric(text, "moe_prefix_cache_hits_total"));
        double reused = Metric(text, "moe_prefix_cache_reused_tokens_total");
        Assert.True(reused >= Reference.Encode(SystemPrompt).Length, $"{reused} tokens reused");
        Assert.True(reused < usage[1], $"{reused} tokens reused of a {usage[1]}-token prompt");
        Assert.Equal(usage.Sum(), Metric(text, "moe_prompt_tokens_total")); // usage counts the whole prompt either way
        Assert.True(Metric(text, "moe_prefix_cache_bytes") > 0);
        Assert.Equal([0, (int)reused], cachedReported); // OpenAI's usage.prompt_tokens_details.cached_tokens
    }

    [Fact]
    public async Task Metrics_report_the_expert_cache_of_a_node_with_a_budget()
    {
        await using var server = await GatewayServer.StartAsync(TinyModel.Dir,
            "moe.experts.residency { budget = 3, policy = lookahead, prefetch = on }");
        using var r = await server.Http.PostAsync("/v1/completions", Json("""{"prompt":"count me in","max_tokens":12,"temperature":0}"""));
        Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        await server.WaitIdleAsync();
        string text = await server.Http.GetStringAsync("/metrics");
        Assert.Equal(3, Metric(text, "moe_expert_cache_budget_experts"));
        Assert.InRange(Metric(text, "moe_experts_resident"), 1, 3);
        double hits = Metric(text, "moe_expert_cache_hits_total"), misses = Metric(text, "moe_expert_cache_misses_total");
        Assert.True(hits + misses > 0, text);
        Assert.Equal(hits / (hits + misses), Metric(text, "moe_expert_cache_hit_ratio"), 6);
        Assert.True(Metric(text, "moe_expert_cache_evictions_total") > 0, text);
        Assert.True(Metric(text, "moe_expert_cache_loaded_bytes_total") > 0, text);
        Assert.Contains("moe_expert_cache_loads_total{kind=\"demand\"}", text, StringComparison.Ordinal);
        Assert.Contains("moe_expert_cache_expert_events_total{layer=\"0\"", text, StringComparison.Ordinal);
        Assert.Contains("moe_expert_cache_stall_seconds_total", text, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_full_queue_answers_429_with_retry_after()
    {
        // One running, one waiting: of eight simultaneous long requests, the ones beyond that are refused at once.
        await using var server = await GatewayServer.StartAsync(TinyModel.Dir,
            "moe.scheduler { max-running-sequences = 1, max-queued-requests = 1 }");
        int ctx = server.Engine.Config.MaxPositionEmbeddings;
        var noEos = server.Engine.Config.EosTokenIds.ToDictionary(e => e.ToString(System.Globalization.CultureInfo.InvariantCulture), _ => -100f);
        string body = JsonSerializer.Serialize(new { prompt = "hold the slot", max_tokens = ctx - 20, temperature = 0, logit_bias = noEos });
        var responses = await Task.WhenAll(Enumerable.Range(0, 8).Select(async _ =>
        {
            using var r = await server.Http.PostAsync("/v1/completions", Json(body));
            return (r.StatusCode, Retry: r.Headers.RetryAfter?.Delta, Body: await r.Content.ReadAsStringAsync());
        }));
        var refused = responses.Where(r => r.StatusCode == HttpStatusCode.TooManyRequests).ToArray();
        Assert.True(refused.Length >= 4, "statuses: " + string.Join(", ", responses.Select(r => (int)r.StatusCode)));
        Assert.All(responses, r => Assert.True(r.StatusCode is HttpStatusCode.OK or HttpStatusCode.TooManyRequests, $"{r.StatusCode}: {r.Body}"));
        foreach (var r in refused)
        {
            Assert.Equal(TimeSpan.FromSeconds(1), r.Retry);
            var error = JsonDocument.Parse(r.Body).RootElement.GetProperty("error");
            Assert.Equal("rate_limit_exceeded", error.GetProperty("code").GetString());
            Assert.Contains("capacity", error.GetProperty("message").GetString()!, StringComparison.Ordinal);
        }
        await server.WaitIdleAsync();
    }

    [Fact]
    public async Task Api_keys_guard_the_api_and_hub_but_not_health()
    {
        await using var server = await GatewayServer.StartAsync(TinyModel.Dir, """moe.gateway.api-keys = ["sk-test-1", "sk-test-2"]""");
        using var noKey = await server.Http.PostAsync("/v1/completions", Json("""{"prompt":"x","max_tokens":2}"""));
        Assert.Equal(HttpStatusCode.Unauthorized, noKey.StatusCode);
        var error = JsonDocument.Parse(await noKey.Content.ReadAsStringAsync()).RootElement.GetProperty("error");
        Assert.Equal("invalid_api_key", error.GetProperty("code").GetString());

        var wrong = new HttpRequestMessage(HttpMethod.Get, "/v1/models");
        wrong.Headers.Authorization = new AuthenticationHeaderValue("Bearer", "sk-wrong");
        using var wrongKey = await server.Http.SendAsync(wrong);
        Assert.Equal(HttpStatusCode.Unauthorized, wrongKey.StatusCode);

        var right = new HttpRequestMessage(HttpMethod.Post, "/v1/completions") { Content = Json("""{"prompt":"x","max_tokens":2}""") };
        right.Headers.Authorization = new AuthenticationHeaderValue("Bearer", "sk-test-2");
        using var ok = await server.Http.SendAsync(right);
        Assert.Equal(HttpStatusCode.OK, ok.StatusCode);

        Assert.Equal(HttpStatusCode.OK, (await server.Http.GetAsync("/health")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await server.Http.GetAsync("/metrics")).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await server.Http.PostAsync("/hubs/chat/negotiate?negotiateVersion=1", null)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await server.Http.PostAsync("/hubs/chat/negotiate?negotiateVersion=1&access_token=sk-test-1", null)).StatusCode);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Ready_follows_the_expert_nodes_and_requests_get_503_while_not_ready(bool failover)
    {
        await using var gateway = await GatewayServer.StartAsync(TinyModel.Dir, $$"""
            moe.experts { ask-timeout = 2s, retry-deadline = 15s, failover.local = {{(failover ? "on" : "off")}} }
            akka.cluster.split-brain-resolver.stable-after = 3s
            akka.cluster.failure-detector.acceptable-heartbeat-pause = 3s
            """, NodeRole.Gateway, waitReady: false);
        // No expert node yet: not ready, and generation requests are refused with 503.
        using (var r = await gateway.Http.GetAsync("/ready"))
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, r.StatusCode);
            Assert.Contains("expert", await r.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }
        using (var r = await gateway.Http.PostAsync("/v1/completions", Json("""{"prompt":"x","max_tokens":2}""")))
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, r.StatusCode);
            Assert.Equal("not_ready", JsonDocument.Parse(await r.Content.ReadAsStringAsync()).RootElement.GetProperty("error").GetProperty("code").GetString());
        }

        var expert = await GatewayServer.StartAsync(TinyModel.Dir, null, NodeRole.Expert, gateway.SeedNode);
        await gateway.WaitReadyAsync();
        using (var r = await gateway.Http.PostAsync("/v1/completions", Json("""{"prompt":"x","max_tokens":2}""")))
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        // The expert node's own /metrics shows the work it did for the gateway.
        string expertMetrics = await expert.Http.GetStringAsync("/metrics");
        Assert.True(Metric(expertMetrics, "moe_experts_resident") > 0, expertMetrics);
        Assert.Contains("moe_expert_rows_total{layer=", expertMetrics, StringComparison.Ordinal);
        Assert.DoesNotContain("moe_requests_running", expertMetrics, StringComparison.Ordinal);

        await expert.DisposeAsync(); // leaves the cluster: nothing hosts the experts any more
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (true)
        {
            using var r = await gateway.Http.GetAsync("/ready");
            string body = await r.Content.ReadAsStringAsync();
            if (failover && body.Contains("computed on this gateway", StringComparison.Ordinal))
            {
                // The gateway computes every expert itself: it stays ready and serves.
                Assert.Equal(HttpStatusCode.OK, r.StatusCode);
                using var c = await gateway.Http.PostAsync("/v1/completions", Json("""{"prompt":"x","max_tokens":2}"""));
                Assert.Equal(HttpStatusCode.OK, c.StatusCode);
                break;
            }
            if (!failover && r.StatusCode == HttpStatusCode.ServiceUnavailable)
            {
                Assert.Contains("did not answer", body, StringComparison.Ordinal);
                break;
            }
            Assert.True(DateTime.UtcNow < deadline, $"/ready after the only expert node left: {(int)r.StatusCode} {body}");
            await Task.Delay(250);
        }
    }

    [Fact]
    public async Task Traces_reach_an_otlp_collector_with_request_step_and_expert_spans()
    {
        await using var collector = await OtlpCollector.StartAsync();
        await using var server = await GatewayServer.StartAsync(TinyModel.Dir, $"moe.gateway.otlp-endpoint = \"{collector.Endpoint}\"");
        using var r = await server.Http.PostAsync("/v1/completions", Json("""{"prompt":"trace me","max_tokens":3}"""));
        Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        // OTLP/protobuf carries span names as raw UTF-8 strings.
        var deadline = DateTime.UtcNow.AddSeconds(30);
        string[] wanted = ["moe.admit", "moe.step", "moe.expert", "/v1/completions", "moe-server"];
        while (!wanted.All(collector.Received))
        {
            Assert.True(DateTime.UtcNow < deadline, "spans missing: " + string.Join(", ", wanted.Where(w => !collector.Received(w))));
            await Task.Delay(250);
        }
    }

    /// <summary>A minimal OTLP/HTTP trace receiver: Kestrel on 127.0.0.1 keeping every POSTed body.</summary>
    private sealed class OtlpCollector : IAsyncDisposable
    {
        private readonly WebApplication _app;
        private readonly List<byte[]> _bodies = [];

        private OtlpCollector(WebApplication app) => _app = app;

        public string Endpoint { get; private set; } = "";

        public static async Task<OtlpCollector> StartAsync()
        {
            var builder = WebApplication.CreateSlimBuilder();
            builder.WebHost.UseUrls("http://127.0.0.1:0");
            builder.Logging.ClearProviders();
            var app = builder.Build();
            var collector = new OtlpCollector(app);
            app.MapPost("/v1/traces", async (HttpContext ctx) =>
            {
                using var ms = new MemoryStream();
                await ctx.Request.Body.CopyToAsync(ms);
                lock (collector._bodies) collector._bodies.Add(ms.ToArray());
                ctx.Response.ContentType = "application/x-protobuf";
            });
            await app.StartAsync();
            collector.Endpoint = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
            return collector;
        }

        public bool Received(string text)
        {
            var needle = Encoding.UTF8.GetBytes(text);
            lock (_bodies) return _bodies.Any(b => b.AsSpan().IndexOf(needle) >= 0);
        }

        public async ValueTask DisposeAsync()
        {
            await _app.StopAsync();
            await _app.DisposeAsync();
        }
    }
}
