using System.Text;
using MoeServer.Gateway.Middleware;
using MoeServer.Gateway.Serving;
using MoeServer.Kernels.Generation;

namespace MoeServer.Gateway.OpenAi;

/// <summary>POST /v1/chat/completions: messages rendered with the model's chat template, the assistant's reply
/// out, whole or as SSE <c>chat.completion.chunk</c> events.</summary>
internal static class ChatCompletionsEndpoint
{
    private static readonly Func<string, string> Field = GenerationPlanner.SnakeCase;

    public static async Task HandleAsync(HttpContext ctx, ApiContext api)
    {
        var req = await ApiErrors.ReadBodyAsync<ChatCompletionRequest>(ctx).ConfigureAwait(false);
        api.Model.CheckModel(req.Model, Field);
        if (req.ResponseFormat is { ValueKind: System.Text.Json.JsonValueKind.Object } rf && rf.TryGetProperty("type", out var rft)
            && (rft.ValueKind != System.Text.Json.JsonValueKind.String || !rft.ValueEquals("text")))
            throw OpenAiException.Invalid("response_format", $"response_format type {rft.GetRawText()} is not supported (text only).");
        if (req.TopLogprobs is not null && req.Logprobs != true)
            throw OpenAiException.Invalid("top_logprobs", "top_logprobs needs logprobs set to true.");
        var tools = req.Tools;
        switch (req.ToolChoice)
        {
            case null or { ValueKind: System.Text.Json.JsonValueKind.Null }:
                break;
            case { ValueKind: System.Text.Json.JsonValueKind.String } tc when tc.ValueEquals("auto"):
                break;
            case { ValueKind: System.Text.Json.JsonValueKind.String } tc when tc.ValueEquals("none"):
                tools = null; // the model is not to call tools: the template does not offer them
                break;
            default:
                throw OpenAiException.Invalid("tool_choice", "tool_choice must be \"auto\" or \"none\": forcing a tool call is not supported (replies are not parsed into tool calls).");
        }
        var prompt = api.Model.EncodeChat(req.Messages, Field, true, tools, req.ChatTemplateKwargs);
        int? maxTokens = req.MaxCompletionTokens ?? req.MaxTokens;
        var job = api.Planner(Field).Plan(RequestIds.Of(ctx), req, [prompt], maxTokens, req.Logprobs == true, req.TopLogprobs ?? 0);
        api.EnsureReady();
        await using var running = await api.Runner.StartAsync(job, ctx.RequestAborted, RequestIds.ArrivalOf(ctx)).ConfigureAwait(false);
        var shape = new Shape("chatcmpl-" + job.RequestId, DateTimeOffset.UtcNow.ToUnixTimeSeconds(), api.Model.Name);
        if (req.Stream == true) await StreamAsync(ctx, api, running, shape, prompt.Length).ConfigureAwait(false);
        else await RespondAsync(ctx, api, running, shape, prompt.Length).ConfigureAwait(false);
    }

    private sealed record Shape(string Id, long Created, string Model);

    private static async Task RespondAsync(HttpContext ctx, ApiContext api, RunningJob running, Shape shape, int promptTokens)
    {
        int count = running.Job.Choices.Count;
        var text = Enumerable.Range(0, count).Select(_ => new StringBuilder()).ToArray();
        var logprobs = running.Job.Logprobs ? Enumerable.Range(0, count).Select(_ => new ChatLogprobs([])).ToArray() : null;
        var finish = new string?[count];
        int completion = 0;
        var cached = new CachedPromptTokens(running.Job);
        await foreach (var (i, c) in running.ReadAllAsync(ctx.RequestAborted).ConfigureAwait(false))
        {
            if (logprobs is not null && c.Token is { } tok) logprobs[i].Content.Add(api.Model.Tokens.ChatEntry(tok));
            text[i].Append(c.Text);
            if (!c.IsFinal) continue;
            if (c.FinishReason == FinishReason.Error) throw CompletionsEndpoint.GenerationFailed(c);
            finish[i] = CompletionsEndpoint.FinishReasonName(c.FinishReason);
            completion += c.Usage?.CompletionTokens ?? 0;
            cached.Add(i, c.Usage);
        }
        var choices = Enumerable.Range(0, count)
            .Select(i => new ChatChoice(i, new ChatMessageOut("assistant", text[i].ToString()), logprobs?[i], finish[i])).ToArray();
        await ctx.Response.WriteAsJsonAsync(new ChatCompletionResponse(shape.Id, "chat.completion", shape.Created, shape.Model, choices,
            new Usage(promptTokens, completion, promptTokens + completion, cached.Details)), OpenAiJson.Options, ctx.RequestAborted).ConfigureAwait(false);
    }

    private static async Task StreamAsync(HttpContext ctx, ApiContext api, RunningJob running, Shape shape, int promptTokens)
    {
        var sse = await SseWriter.StartAsync(ctx).ConfigureAwait(false);
        var ct = ctx.RequestAborted;
        ChatCompletionChunk Chunk(ChatChunkChoice choice) => new(shape.Id, "chat.completion.chunk", shape.Created, shape.Model, [choice], null);
        // Every choice opens with the assistant role, as OpenAI streams do.
        for (int i = 0; i < running.Job.Choices.Count; i++)
            await sse.WriteAsync(Chunk(new ChatChunkChoice(i, new ChatDelta("assistant", ""), null, null)), ct).ConfigureAwait(false);
        int completion = 0;
        var cached = new CachedPromptTokens(running.Job);
        await foreach (var (i, c) in running.ReadAllAsync(ct).ConfigureAwait(false))
        {
            if (c.IsFinal && c.FinishReason == FinishReason.Error)
            {
                await sse.WriteAsync(CompletionsEndpoint.GenerationFailed(c).ToBody(), ct).ConfigureAwait(false);
                await sse.DoneAsync(ct).ConfigureAwait(false);
                return;
            }
            if (c.IsFinal && c.FinishReason == FinishReason.Cancelled) return;
            ChatLogprobs? lp = running.Job.Logprobs && c.Token is { } tok ? new ChatLogprobs([api.Model.Tokens.ChatEntry(tok)]) : null;
            if (c.Text.Length > 0 || lp is not null)
                await sse.WriteAsync(Chunk(new ChatChunkChoice(i, new ChatDelta(null, c.Text), lp, null)), ct).ConfigureAwait(false);
            if (!c.IsFinal) continue;
            completion += c.Usage?.CompletionTokens ?? 0;
            cached.Add(i, c.Usage);
            await sse.WriteAsync(Chunk(new ChatChunkChoice(i, new ChatDelta(null, null), null,
                CompletionsEndpoint.FinishReasonName(c.FinishReason))), ct).ConfigureAwait(false);
        }
        if (running.Job.IncludeUsage)
        {
            await sse.WriteAsync(new ChatCompletionChunk(shape.Id, "chat.completion.chunk", shape.Created, shape.Model, [],
                new Usage(promptTokens, completion, promptTokens + completion, cached.Details)), ct).ConfigureAwait(false);
        }
        await sse.DoneAsync(ct).ConfigureAwait(false);
    }
}
