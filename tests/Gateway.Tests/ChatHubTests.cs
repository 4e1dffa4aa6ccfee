using Microsoft.AspNetCore.SignalR;
using Microsoft.AspNetCore.SignalR.Client;
using Microsoft.Extensions.DependencyInjection;
using MoeServer.Gateway.Hubs;
using MoeServer.Gateway.OpenAi;
using MoeServer.Gateway.Tests.Support;

namespace MoeServer.Gateway.Tests;

/// <summary>The SignalR .NET client against the real hub, over both protocols.</summary>
public sealed class ChatHubTests(SharedServer shared) : IClassFixture<SharedServer>
{
    private GatewayServer Server => shared.Server;

    private async Task<HubConnection> ConnectAsync(bool messagePack)
    {
        var builder = new HubConnectionBuilder().WithUrl(new Uri(Server.BaseAddress, ChatHub.Path));
        if (messagePack) builder.AddMessagePackProtocol();
        var connection = builder.Build();
        await connection.StartAsync();
        return connection;
    }

    private static async Task<(string Text, List<HubTokenChunk> Chunks)> CollectAsync(IAsyncEnumerable<HubTokenChunk> stream)
    {
        var chunks = new List<HubTokenChunk>();
        await foreach (var c in stream) chunks.Add(c);
        return (string.Concat(chunks.Select(c => c.Text)), chunks);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Generate_streams_the_greedy_text_with_usage_and_expert_routing(bool messagePack)
    {
        await using var connection = await ConnectAsync(messagePack);
        var request = new GenerateRequest { Prompt = "Hub prompt", MaxTokens = 10, Temperature = 0, Logprobs = true, TopLogprobs = 2 };
        var (text, chunks) = await CollectAsync(connection.StreamAsync<HubTokenChunk>("Generate", request));

        var want = await Reference.GreedyAsync(Server.Engine, Reference.Encode("Hub prompt"), 10);
        Assert.Equal(want.Text, text);
        var last = chunks[^1];
        Assert.Equal(want.Finish, last.FinishReason);
        Assert.Equal(want.Tokens, last.Usage!.CompletionTokens);
        Assert.All(chunks[..^1], c => Assert.Null(c.FinishReason));
        var cfg = Server.Engine.Config;
        foreach (var c in chunks.Where(c => c.TokenId >= 0))
        {
            Assert.NotNull(c.Logprob);
            Assert.Equal(2, c.TopLogprobs!.Count);
            Assert.Equal(cfg.NumLayers, c.Experts!.Length);
            for (int l = 0; l < cfg.NumLayers; l++)
            {
                if (!cfg.IsSparseLayer(l)) Assert.Empty(c.Experts[l]);
                else Assert.Equal(cfg.NumExpertsPerToken, c.Experts[l].Distinct().Count(e => e >= 0 && e < cfg.NumExperts));
            }
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Chat_streams_the_same_reply_as_the_http_api(bool messagePack)
    {
        await using var connection = await ConnectAsync(messagePack);
        var request = new ChatRequest
        {
            Messages = [new ChatMessageDto { Role = "system", Content = "Be kind." }, new ChatMessageDto { Role = "user", Content = "What is MoE?" }],
            MaxTokens = 12,
            Temperature = 0,
        };
        var (text, chunks) = await CollectAsync(connection.StreamAsync<HubTokenChunk>("Chat", request));
        var want = await Reference.GreedyAsync(Server.Engine, Reference.EncodeChat(("system", "Be kind."), ("user", "What is MoE?")), 12);
        Assert.Equal(want.Text, text);
        Assert.NotNull(chunks[^1].Usage);
    }

    [Fact]
    public async Task Routing_overrides_reach_the_experts_panel()
    {
        await using var connection = await ConnectAsync(messagePack: false);
        var cfg = Server.Engine.Config;
        int sparse = Enumerable.Range(0, cfg.NumLayers).First(cfg.IsSparseLayer);
        var request = new GenerateRequest
        {
            Prompt = "Override me",
            MaxTokens = 6,
            Temperature = 0,
            TopKExperts = 1,
            DisabledExperts = ["0", $"{sparse}.1"],
        };
        var (_, chunks) = await CollectAsync(connection.StreamAsync<HubTokenChunk>("Generate", request));
        foreach (var c in chunks.Where(c => c.TokenId >= 0))
        {
            for (int l = 0; l < cfg.NumLayers; l++)
            {
                if (!cfg.IsSparseLayer(l)) continue;
                var experts = Assert.Single(c.Experts![l]);
                Assert.NotEqual(0, experts);
                if (l == sparse) Assert.NotEqual(1, experts);
            }
        }
    }

    [Fact]
    public async Task Cancelling_the_stream_cancels_the_generation_and_frees_its_resources()
    {
        await using var connection = await ConnectAsync(messagePack: true);
        int ctx = Server.Engine.Config.MaxPositionEmbeddings;
        var noEos = Server.Engine.Config.EosTokenIds.ToDictionary(e => e.ToString(System.Globalization.CultureInfo.InvariantCulture), _ => -100f);
        using var cts = new CancellationTokenSource();
        var request = new GenerateRequest { Prompt = "Stop me", MaxTokens = ctx - 20, Temperature = 0, LogitBias = noEos };
        long generatedBefore = (await Server.Engine.GetStatsAsync()).GeneratedTokens;
        int seen = 0;
        // The SignalR client sends CancelInvocation when the token given to StreamAsync is cancelled. (Only leaving the
        // loop does not: with Microsoft.AspNetCore.SignalR.Client 10, disposing the enumerator sends nothing, and the server
        // streams the whole answer to a client that drops it, as the client log showed.)
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var c in connection.StreamAsync<HubTokenChunk>("Generate", request, cts.Token))
            {
                Assert.Null(c.FinishReason);
                if (++seen == 3)
                {
                    Assert.True(Server.Engine.Gauges.Running >= 1);
                    cts.Cancel();
                }
            }
        });
        // Within a step of the cancel reaching the engine; generous, as CI runs other test projects' clusters alongside.
        await Server.WaitIdleAsync(TimeSpan.FromSeconds(30));
        // Idle because it was cancelled, not because it ran to max_tokens (which a fast machine can do in 30 s).
        long generated = (await Server.Engine.GetStatsAsync()).GeneratedTokens - generatedBefore;
        Assert.True(generated < ctx / 2, $"{generated} tokens generated after the cancel: the cancel did not reach the engine");
    }

    [Fact]
    public async Task Disconnecting_cancels_the_generation()
    {
        var connection = await ConnectAsync(messagePack: false);
        int ctx = Server.Engine.Config.MaxPositionEmbeddings;
        var noEos = Server.Engine.Config.EosTokenIds.ToDictionary(e => e.ToString(System.Globalization.CultureInfo.InvariantCulture), _ => -100f);
        var request = new GenerateRequest { Prompt = "Leave me", MaxTokens = ctx - 20, Temperature = 0, LogitBias = noEos };
        var stream = connection.StreamAsync<HubTokenChunk>("Generate", request).GetAsyncEnumerator();
        Assert.True(await stream.MoveNextAsync());
        await connection.DisposeAsync();
        await Server.WaitIdleAsync(TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task Invalid_fields_are_hub_errors_naming_the_camel_case_field()
    {
        await using var connection = await ConnectAsync(messagePack: false);
        var e1 = await Assert.ThrowsAsync<HubException>(() => CollectAsync(connection.StreamAsync<HubTokenChunk>("Generate",
            new GenerateRequest { Prompt = "x", TopP = 5 })));
        Assert.Contains("topP", e1.Message, StringComparison.Ordinal);
        var e2 = await Assert.ThrowsAsync<HubException>(() => CollectAsync(connection.StreamAsync<HubTokenChunk>("Generate",
            new GenerateRequest { Prompt = "x", TopKExperts = 99 })));
        Assert.Contains("topKExperts", e2.Message, StringComparison.Ordinal);
        var e3 = await Assert.ThrowsAsync<HubException>(() => CollectAsync(connection.StreamAsync<HubTokenChunk>("Chat",
            new ChatRequest { Messages = [] })));
        Assert.Contains("messages", e3.Message, StringComparison.Ordinal);
        var e4 = await Assert.ThrowsAsync<HubException>(() => CollectAsync(connection.StreamAsync<HubTokenChunk>("Generate",
            new GenerateRequest())));
        Assert.Contains("prompt", e4.Message, StringComparison.Ordinal);
    }
}
