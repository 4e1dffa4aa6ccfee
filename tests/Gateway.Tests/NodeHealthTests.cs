using System.Diagnostics;
using System.Net;
using System.Text.Json;

namespace MoeServer.Gateway.Tests;

/// <summary>/health and /ready of real server processes on ephemeral ports, and shutdown on SIGTERM.</summary>
public class SingleNodeTests
{
    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task An_embedded_node_is_alive_at_once_and_ready_within_60_seconds()
    {
        using var server = ServerProcess.Start("--role", "all", "--model", TinyModel.Dir);
        var url = await server.ListeningAsync(StartTimeout);
        string cluster = await server.ClusterAddressAsync(StartTimeout);
        Assert.Matches(@"^akka\.tcp://moe@127\.0\.0\.1:\d+$", cluster);
        Assert.NotEqual(0, int.Parse(cluster[(cluster.LastIndexOf(':') + 1)..])); // the port actually bound
        Assert.NotEqual(0, url.Port);

        var (code, health) = await Http.GetJsonAsync(new Uri(url, "/health"));
        Assert.Equal(HttpStatusCode.OK, code);
        Assert.Equal("ok", health.GetProperty("status").GetString());
        Assert.Equal("all", health.GetProperty("role").GetString());
        Assert.False(string.IsNullOrEmpty(health.GetProperty("phase").GetString()));

        var ready = await Http.WaitReadyAsync(url, StartTimeout, server);
        Assert.Equal("ready", ready.GetProperty("status").GetString());
        // /ready names the cluster's members as this node sees them: here only itself, up and reachable.
        var self = Assert.Single(ready.GetProperty("nodes").EnumerateArray());
        Assert.True(self.GetProperty("self").GetBoolean());
        Assert.Equal("up", self.GetProperty("status").GetString());
        Assert.True(self.GetProperty("reachable").GetBoolean());
        Assert.Contains("gateway", self.GetProperty("roles").EnumerateArray().Select(r => r.GetString()));
        (_, health) = await Http.GetJsonAsync(new Uri(url, "/health"));
        Assert.Equal("up", health.GetProperty("phase").GetString());
    }

    /// <summary>The README's run command: no --model serves the committed trained model, and it has learned its text
    /// (the first verse of Genesis is in the training split).</summary>
    [Fact]
    public async Task Without_a_model_the_server_serves_the_trained_default_model()
    {
        using var server = ServerProcess.Start();
        var url = await server.ListeningAsync(StartTimeout);
        await Http.WaitReadyAsync(url, StartTimeout, server);
        var (code, models) = await Http.GetJsonAsync(new Uri(url, "/v1/models"));
        Assert.Equal(HttpStatusCode.OK, code);
        Assert.Equal("readme-moe", models.GetProperty("data")[0].GetProperty("id").GetString());
        Assert.Equal("readme_moe", models.GetProperty("data")[0].GetProperty("architecture").GetString());

        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(60) };
        using var response = await http.PostAsync(new Uri(url, "/v1/completions"), new StringContent(
            """{"model":"readme-moe","prompt":"In the beginning God created the heaven and the","max_tokens":4,"temperature":0}""",
            System.Text.Encoding.UTF8, "application/json"));
        string body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, body);
        using var doc = JsonDocument.Parse(body);
        string text = doc.RootElement.GetProperty("choices")[0].GetProperty("text").GetString()!;
        Assert.StartsWith(" earth", text, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Sigterm_drains_leaves_the_cluster_and_exits_0_within_30_seconds()
    {
        using var server = ServerProcess.Start("--model", TinyModel.Dir);
        var url = await server.ListeningAsync(StartTimeout);
        await Http.WaitReadyAsync(url, StartTimeout, server);

        var sw = Stopwatch.StartNew();
        server.Terminate();
        Assert.True(server.WaitForExit(TimeSpan.FromSeconds(30)), "no exit within 30 s of SIGTERM:\n" + server.Output);
        Assert.True(server.ExitCode == 0, $"exit code {server.ExitCode} after {sw.Elapsed}:\n{server.Output}");
        string log = server.Output;
        int drained = log.IndexOf("drained: every request finished", StringComparison.Ordinal);
        int leaving = log.IndexOf("as [Leaving]", StringComparison.Ordinal);
        Assert.True(drained >= 0, "the gateway did not drain:\n" + log);
        Assert.True(leaving > drained, "the node left the cluster before it drained:\n" + log);
    }
}

public class ExpertNodeTests
{
    [Fact]
    public async Task An_expert_node_whose_seed_does_not_exist_is_alive_but_not_ready()
    {
        string seed = $"127.0.0.1:{ServerProcess.UnusedPort()}";
        using var server = ServerProcess.Start("--role", "expert", "--seed-nodes", seed, "--model", TinyModel.Dir);
        var url = await server.ListeningAsync(TimeSpan.FromSeconds(60));

        var (code, health) = await Http.GetJsonAsync(new Uri(url, "/health"));
        Assert.Equal(HttpStatusCode.OK, code);
        Assert.Equal("ok", health.GetProperty("status").GetString());
        Assert.Equal("expert", health.GetProperty("role").GetString());

        // Give it a few probe rounds: it must stay unready, saying why.
        await Task.Delay(TimeSpan.FromSeconds(2));
        var (readyCode, ready) = await Http.GetJsonAsync(new Uri(url, "/ready"));
        Assert.Equal(HttpStatusCode.ServiceUnavailable, readyCode);
        Assert.Equal("not_ready", ready.GetProperty("status").GetString());
        Assert.False(string.IsNullOrWhiteSpace(ready.GetProperty("reason").GetString()));

        server.Terminate();
        Assert.True(server.WaitForExit(TimeSpan.FromSeconds(30)), "no exit within 30 s of SIGTERM:\n" + server.Output);
        Assert.Equal(0, server.ExitCode);
    }
}

internal static class Http
{
    private static readonly HttpClient Client = new() { Timeout = TimeSpan.FromSeconds(10) };

    public static async Task<(HttpStatusCode Code, JsonElement Body)> GetJsonAsync(Uri uri)
    {
        using var response = await Client.GetAsync(uri);
        string text = await response.Content.ReadAsStringAsync();
        Assert.StartsWith("application/json", response.Content.Headers.ContentType?.MediaType ?? "", StringComparison.Ordinal);
        using var doc = JsonDocument.Parse(text);
        return (response.StatusCode, doc.RootElement.Clone());
    }

    /// <summary>Polls /ready until 200; every other answer must be a 503 with a reason.</summary>
    public static async Task<JsonElement> WaitReadyAsync(Uri baseUrl, TimeSpan timeout, ServerProcess server)
    {
        var sw = Stopwatch.StartNew();
        while (true)
        {
            var (code, body) = await GetJsonAsync(new Uri(baseUrl, "/ready"));
            if (code == HttpStatusCode.OK) return body;
            Assert.Equal(HttpStatusCode.ServiceUnavailable, code);
            Assert.Equal("not_ready", body.GetProperty("status").GetString());
            Assert.False(string.IsNullOrWhiteSpace(body.GetProperty("reason").GetString()));
            if (sw.Elapsed > timeout)
                Assert.Fail($"/ready still 503 after {timeout} ({body.GetProperty("reason").GetString()}):\n{server.Output}");
            await Task.Delay(200);
        }
    }
}
