using System.ClientModel;
using System.ClientModel.Primitives;
using System.Text;
using System.Text.Json;
using MoeServer.Gateway.Tests.Support;
using OpenAI;
using OpenAI.Chat;

namespace MoeServer.Gateway.Tests;

/// <summary>The official OpenAI .NET SDK against a real Kestrel: what any OpenAI client gets from us.</summary>
public sealed class OpenAiSdkTests(SharedServer shared) : IClassFixture<SharedServer>
{
    private GatewayServer Server => shared.Server;

    private OpenAIClient Client() => new(new ApiKeyCredential("unused"), new OpenAIClientOptions { Endpoint = new Uri(Server.BaseAddress, "/v1") });

    private static string ModelName => new DirectoryInfo(TinyModel.Dir).Name;

    [Fact]
    public async Task Chat_completion_returns_the_greedy_reply_with_usage()
    {
        var chat = Client().GetChatClient(ModelName);
        var options = new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 12 };
        ChatCompletion reply = await chat.CompleteChatAsync([new UserChatMessage("Tell me about experts.")], options);

        var prompt = Reference.EncodeChat(("user", "Tell me about experts."));
        var want = await Reference.GreedyAsync(Server.Engine, prompt, 12);
        Assert.Equal(want.Text, reply.Content[0].Text);
        Assert.Equal(ChatMessageRole.Assistant, reply.Role);
        Assert.Equal(want.Finish == "length" ? ChatFinishReason.Length : ChatFinishReason.Stop, reply.FinishReason);
        Assert.Equal(prompt.Length, reply.Usage.InputTokenCount);
        Assert.Equal(want.Tokens, reply.Usage.OutputTokenCount);
        Assert.Equal(prompt.Length + want.Tokens, reply.Usage.TotalTokenCount);
        Assert.Equal(ModelName, reply.Model);
        Assert.StartsWith("chatcmpl-", reply.Id);
    }

    [Fact]
    public async Task A_repeated_system_prompt_is_reported_as_cached_input_tokens()
    {
        var chat = Client().GetChatClient(ModelName);
        var options = new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 2 };
        string system = $"You answer questions about mixture-of-experts servers (session {Guid.NewGuid():N}); keep every answer short.";
        ChatCompletion first = await chat.CompleteChatAsync([new SystemChatMessage(system), new UserChatMessage("What is an expert?")], options);
        ChatCompletion second = await chat.CompleteChatAsync([new SystemChatMessage(system), new UserChatMessage("And a router?")], options);
        Assert.Equal(0, first.Usage.InputTokenDetails.CachedTokenCount);
        int cached = second.Usage.InputTokenDetails.CachedTokenCount;
        Assert.True(cached >= 16 && cached < second.Usage.InputTokenCount, $"{cached} of {second.Usage.InputTokenCount} input tokens cached");
    }

    [Fact]
    public async Task Streaming_chat_yields_the_same_text_as_the_whole_reply_and_reports_usage()
    {
        var chat = Client().GetChatClient(ModelName);
        var options = new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 16 };
        var messages = new ChatMessage[] { new SystemChatMessage("Be brief."), new UserChatMessage("What is a router?") };
        ChatCompletion whole = await chat.CompleteChatAsync(messages, options);

        var text = new StringBuilder();
        int updates = 0;
        ChatTokenUsage? usage = null;
        ChatFinishReason? finish = null;
        await foreach (var update in chat.CompleteChatStreamingAsync(messages, options))
        {
            updates++;
            foreach (var part in update.ContentUpdate) text.Append(part.Text);
            usage ??= update.Usage;
            finish ??= update.FinishReason;
        }
        Assert.Equal(whole.Content[0].Text, text.ToString());
        Assert.True(updates > 3, $"only {updates} updates: the reply was not streamed token by token");
        Assert.Equal(whole.FinishReason, finish);
        Assert.NotNull(usage); // the SDK asks for stream_options.include_usage
        Assert.Equal(whole.Usage.TotalTokenCount, usage!.TotalTokenCount);
    }

    [Fact]
    public async Task Chat_logprobs_come_back_through_the_sdk()
    {
        var chat = Client().GetChatClient(ModelName);
        var options = new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 5, IncludeLogProbabilities = true, TopLogProbabilityCount = 3 };
        ChatCompletion reply = await chat.CompleteChatAsync([new UserChatMessage("Hello")], options);
        Assert.Equal(reply.Usage.OutputTokenCount, reply.ContentTokenLogProbabilities.Count);
        foreach (var lp in reply.ContentTokenLogProbabilities)
        {
            Assert.True(lp.LogProbability <= 0);
            Assert.Equal(3, lp.TopLogProbabilities.Count);
            // Greedy: the chosen token is the most likely one.
            Assert.Equal(lp.TopLogProbabilities[0].LogProbability, lp.LogProbability, 4);
        }
    }

    /// <summary>/v1/completions through the SDK's own pipeline (auth, transport, error handling): the SDK's typed
    /// legacy-completions client is internal in 2.x, so the request goes through the pipeline it would use.</summary>
    private async Task<PipelineResponse> SdkPostAsync(string path, object body, bool stream)
    {
        var pipeline = Client().GetChatClient(ModelName).Pipeline;
        using var message = pipeline.CreateMessage();
        message.Request.Method = "POST";
        message.Request.Uri = new Uri(Server.BaseAddress, path);
        message.Request.Headers.Set("Content-Type", "application/json");
        message.Request.Content = BinaryContent.Create(BinaryData.FromObjectAsJson(body));
        message.BufferResponse = !stream;
        message.Apply(new RequestOptions { ErrorOptions = ClientErrorBehaviors.Default });
        await pipeline.SendAsync(message);
        if (message.Response!.IsError) throw new ClientResultException(message.Response);
        return message.ExtractResponse()!;
    }

    [Fact]
    public async Task Legacy_completions_through_the_sdk_match_the_engine_whole_and_streamed()
    {
        var body = new { model = ModelName, prompt = "The mixture of experts", max_tokens = 10, temperature = 0 };
        using var result = await SdkPostAsync("/v1/completions", body, stream: false);
        using var doc = JsonDocument.Parse(result.Content);
        var root = doc.RootElement;
        var want = await Reference.GreedyAsync(Server.Engine, Reference.Encode("The mixture of experts"), 10);
        Assert.Equal("text_completion", root.GetProperty("object").GetString());
        Assert.Equal(want.Text, root.GetProperty("choices")[0].GetProperty("text").GetString());
        Assert.Equal(want.Finish, root.GetProperty("choices")[0].GetProperty("finish_reason").GetString());
        Assert.Equal(want.Tokens, root.GetProperty("usage").GetProperty("completion_tokens").GetInt32());

        var streamBody = new { model = ModelName, prompt = "The mixture of experts", max_tokens = 10, temperature = 0, stream = true };
        using var response = await SdkPostAsync("/v1/completions", streamBody, stream: true);
        using var reader = new StreamReader(response.ContentStream!);
        var text = new StringBuilder();
        bool done = false;
        while (await reader.ReadLineAsync() is { } line)
        {
            if (line.Length == 0) continue;
            Assert.StartsWith("data: ", line);
            if (line == "data: [DONE]")
            {
                done = true;
                break;
            }
            using var chunk = JsonDocument.Parse(line[6..]);
            text.Append(chunk.RootElement.GetProperty("choices")[0].GetProperty("text").GetString());
        }
        Assert.True(done);
        Assert.Equal(want.Text, text.ToString());
    }

    [Fact]
    public async Task Models_list_names_the_served_model_with_its_context_length()
    {
        var models = Client().GetOpenAIModelClient();
        var list = await models.GetModelsAsync();
        var model = Assert.Single(list.Value);
        Assert.Equal(ModelName, model.Id);
        var raw = await Server.GetJsonAsync("/v1/models");
        Assert.Equal(Server.Engine.Config.MaxPositionEmbeddings, raw.GetProperty("data")[0].GetProperty("max_model_len").GetInt32());
    }

    [Fact]
    public async Task An_invalid_request_surfaces_in_the_sdk_as_a_400_naming_the_field()
    {
        var chat = Client().GetChatClient(ModelName);
        var e = await Assert.ThrowsAsync<ClientResultException>(() =>
            chat.CompleteChatAsync([new UserChatMessage("x")], new ChatCompletionOptions { Temperature = 7 }));
        Assert.Equal(400, e.Status);
        Assert.Contains("temperature", e.Message, StringComparison.Ordinal);
    }
}
