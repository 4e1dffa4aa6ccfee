using System.Text;
using System.Text.Json;
using MoeServer.Actors.Generation;
using MoeServer.Gateway.Middleware;
using MoeServer.Gateway.Serving;
using MoeServer.Kernels.Generation;
using MoeServer.Kernels.Tokenization;

namespace MoeServer.Gateway.OpenAi;

/// <summary>POST /v1/completions: prompt(s) in, text completion(s) out, whole or as SSE.</summary>
internal static class CompletionsEndpoint
{
    private static readonly Func<string, string> Field = GenerationPlanner.SnakeCase;

    public static async Task HandleAsync(HttpContext ctx, ApiContext api)
    {
        var req = await ApiErrors.ReadBodyAsync<CompletionRequest>(ctx).ConfigureAwait(false);
        api.Model.CheckModel(req.Model, Field);
        if (req.Echo == true) throw OpenAiException.Invalid("echo", "echo is not supported by this server.");
        if (!string.IsNullOrEmpty(req.Suffix)) throw OpenAiException.Invalid("suffix", "suffix is not supported by this server.");
        if (req.BestOf is { } bestOf && bestOf != (req.N ?? 1))
            throw OpenAiException.Invalid("best_of", $"best_of must equal n (this server does not rank candidates); got {bestOf}.");
        var prompts = Prompts(req.Prompt, api.Model);
        var job = api.Planner(Field).Plan(RequestIds.Of(ctx), req, prompts, req.MaxTokens, req.Logprobs is not null, req.Logprobs ?? 0);
        api.EnsureReady();
        await using var running = await api.Runner.StartAsync(job, ctx.RequestAborted, RequestIds.ArrivalOf(ctx)).ConfigureAwait(false);
        var shape = new ResponseShape("cmpl-" + job.RequestId, DateTimeOffset.UtcNow.ToUnixTimeSeconds(), api.Model.Name);
        int promptTokens = prompts.Sum(p => p.Length);
        if (req.Stream == true) await StreamAsync(ctx, api, running, shape, promptTokens).ConfigureAwait(false);
        else await RespondAsync(ctx, api, running, shape, promptTokens).ConfigureAwait(false);
    }

    private sealed record ResponseShape(string Id, long Created, string Model);

    private static async Task RespondAsync(HttpContext ctx, ApiContext api, RunningJob running, ResponseShape shape, int promptTokens)
    {
        int count = running.Job.Choices.Count;
        var text = Enumerable.Range(0, count).Select(_ => new StringBuilder()).ToArray();
        var logprobs = running.Job.Logprobs ? Enumerable.Range(0, count).Select(_ => new CompletionLogprobs([], [], [], [])).ToArray() : null;
        var finish = new string?[count];
        int completion = 0;
        var cached = new CachedPromptTokens(running.Job);
        await foreach (var (i, c) in running.ReadAllAsync(ctx.RequestAborted).ConfigureAwait(false))
        {
            if (logprobs is not null && c.Token is { } tok) AddLogprobs(api, logprobs[i], tok, text[i].Length);
            text[i].Append(c.Text);
            if (!c.IsFinal) continue;
            if (c.FinishReason == FinishReason.Error) throw GenerationFailed(c);
            finish[i] = FinishReasonName(c.FinishReason);
            completion += c.Usage?.CompletionTokens ?? 0;
            cached.Add(i, c.Usage);
        }
        var choices = Enumerable.Range(0, count).Select(i => new CompletionChoice(i, text[i].ToString(), logprobs?[i], finish[i])).ToArray();
        await ctx.Response.WriteAsJsonAsync(new CompletionResponse(shape.Id, "text_completion", shape.Created, shape.Model, choices,
            new Usage(promptTokens, completion, promptTokens + completion, cached.Details)), OpenAiJson.Options, ctx.RequestAborted).ConfigureAwait(false);
    }

    private static async Task StreamAsync(HttpContext ctx, ApiContext api, RunningJob running, ResponseShape shape, int promptTokens)
    {
        var sse = await SseWriter.StartAsync(ctx).ConfigureAwait(false);
        var ct = ctx.RequestAborted;
        var offsets = new int[running.Job.Choices.Count];
        int completion = 0;
        var cached = new CachedPromptTokens(running.Job);
        await foreach (var (i, c) in running.ReadAllAsync(ct).ConfigureAwait(false))
        {
            if (c.IsFinal && c.FinishReason == FinishReason.Error)
            {
                await sse.WriteAsync(GenerationFailed(c).ToBody(), ct).ConfigureAwait(false);
                await sse.DoneAsync(ct).ConfigureAwait(false);
                return;
            }
            if (c.IsFinal && c.FinishReason == FinishReason.Cancelled) return; // the client is gone
            CompletionLogprobs? lp = null;
            if (running.Job.Logprobs && c.Token is { } tok)
            {
                lp = new CompletionLogprobs([], [], [], []);
                AddLogprobs(api, lp, tok, offsets[i]);
            }
            offsets[i] += c.Text.Length;
            if (c.IsFinal) completion += c.Usage?.CompletionTokens ?? 0;
            cached.Add(i, c.Usage);
            if (c.Text.Length == 0 && lp is null && !c.IsFinal) continue; // text held back (partial character or stop string)
            var choice = new CompletionChoice(i, c.Text, lp, c.IsFinal ? FinishReasonName(c.FinishReason) : null);
            await sse.WriteAsync(new CompletionResponse(shape.Id, "text_completion", shape.Created, shape.Model, [choice], null), ct).ConfigureAwait(false);
        }
        if (running.Job.IncludeUsage)
        {
            await sse.WriteAsync(new CompletionResponse(shape.Id, "text_completion", shape.Created, shape.Model, [],
                new Usage(promptTokens, completion, promptTokens + completion, cached.Details)), ct).ConfigureAwait(false);
        }
        await sse.DoneAsync(ct).ConfigureAwait(false);
    }

    private static void AddLogprobs(ApiContext api, CompletionLogprobs lp, Kernels.Sampling.SampledToken tok, int offset)
    {
        lp.Tokens.Add(api.Model.Tokens.Text(tok.TokenId));
        lp.TokenLogprobs.Add(tok.Logprob);
        lp.TopLogprobs.Add(api.Model.Tokens.TopDictionary(tok));
        lp.TextOffset.Add(offset);
    }

    internal static string? FinishReasonName(FinishReason? r) => r switch
    {
        FinishReason.Stop => "stop",
        FinishReason.Length => "length",
        null => null,
        _ => r.Value.ToString().ToLowerInvariant(),
    };

    /// <summary>The error a failed generation answers with: 408 timeout_error when the request's own deadline passed
    /// (the client asked for it), otherwise a server error.</summary>
    internal static OpenAiException GenerationFailed(TokenChunk final) => final.DeadlineExceeded
        ? new(StatusCodes.Status408RequestTimeout, $"The request timed out: {final.Error}.", "timeout_error", "timeout", "timeout")
        : new(StatusCodes.Status500InternalServerError, $"The generation failed: {final.Error ?? "unknown error"}", "server_error", null, "generation_failed");

    /// <summary>A string, a list of strings, a list of token ids, or a list of token-id lists.</summary>
    private static List<int[]> Prompts(JsonElement? prompt, ServedModel model)
    {
        const string field = "prompt";
        if (prompt is not { } p || p.ValueKind is JsonValueKind.Null or JsonValueKind.Undefined)
            throw OpenAiException.Invalid(field, "prompt is required.");
        if (p.ValueKind == JsonValueKind.String) return [model.Tokenizer.EncodePrompt(JsonText.Of(p, field))];
        if (p.ValueKind != JsonValueKind.Array || p.GetArrayLength() == 0)
            throw OpenAiException.Invalid(field, "prompt must be a string, a list of strings, a list of token ids or a list of token-id lists.");
        var items = p.EnumerateArray().ToArray();
        if (items.All(e => e.ValueKind == JsonValueKind.String)) return items.Select((e, i) => model.Tokenizer.EncodePrompt(JsonText.Of(e, $"{field}[{i}]"))).ToList();
        if (items.All(e => e.ValueKind == JsonValueKind.Number)) return [TokenIds(items, field)];
        if (items.All(e => e.ValueKind == JsonValueKind.Array))
            return items.Select((e, i) => TokenIds(e.EnumerateArray().ToArray(), $"{field}[{i}]")).ToList();
        throw OpenAiException.Invalid(field, "prompt mixes kinds of entries; it must be a string, a list of strings, a list of token ids or a list of token-id lists.");
    }

    private static int[] TokenIds(JsonElement[] items, string field)
    {
        var ids = new int[items.Length];
        for (int i = 0; i < items.Length; i++)
        {
            if (items[i].ValueKind != JsonValueKind.Number || !items[i].TryGetInt32(out ids[i]))
                throw OpenAiException.Invalid(field, $"{field} entry {i} is not a token id (an integer).");
        }
        return ids;
    }
}
