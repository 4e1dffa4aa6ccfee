using System.Net;
using System.Text.Json;
using MoeServer.Gateway.Tests.Support;

namespace MoeServer.Gateway.Tests;

/// <summary>Many streaming clients at once share the engine's batches and each still gets exactly its own text.</summary>
public sealed class ConcurrentStreamingTests(SharedServer shared) : IClassFixture<SharedServer>
{
    private GatewayServer Server => shared.Server;

    [Fact]
    public async Task Thirty_two_concurrent_streams_each_get_the_single_request_greedy_text()
    {
        const int clients = 32, maxTokens = 16;
        string[] prompts = Enumerable.Range(0, clients).Select(i => $"Client {i} asks about expert {i % 8} and layer {i % 3}").ToArray();
        var want = new (string Text, int Tokens, string Finish)[clients];
        for (int i = 0; i < clients; i++) want[i] = await Reference.GreedyAsync(Server.Engine, Reference.Encode(prompts[i]), maxTokens);

        using var start = new SemaphoreSlim(0);
        var runs = Enumerable.Range(0, clients).Select(async i =>
        {
            await start.WaitAsync();
            using var r = await Sse.StartAsync(Server.Http, "/v1/completions", new
            {
                prompt = prompts[i],
                max_tokens = maxTokens,
                temperature = 0,
                stream = true,
                stream_options = new { include_usage = true },
            });
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
            var events = await Sse.ReadAllAsync(r);
            string text = string.Concat(events.Where(e => e.GetProperty("choices").GetArrayLength() > 0)
                .Select(e => e.GetProperty("choices")[0].GetProperty("text").GetString()));
            int tokens = events[^1].GetProperty("usage").GetProperty("completion_tokens").GetInt32();
            return (text, tokens);
        }).ToArray();
        start.Release(clients);
        var results = await Task.WhenAll(runs).WaitAsync(TimeSpan.FromMinutes(3));
        for (int i = 0; i < clients; i++)
        {
            Assert.True(want[i].Text == results[i].text, $"client {i}: expected \"{want[i].Text}\", got \"{results[i].text}\"");
            Assert.Equal(want[i].Tokens, results[i].tokens);
        }
        await Server.WaitIdleAsync();
    }
}
