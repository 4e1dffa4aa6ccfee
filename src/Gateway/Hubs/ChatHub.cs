using System.Runtime.CompilerServices;
using Microsoft.AspNetCore.SignalR;
using MoeServer.Actors.Generation;
using MoeServer.Gateway.OpenAi;
using MoeServer.Gateway.Serving;
using MoeServer.Kernels.Tokenization;

namespace MoeServer.Gateway.Hubs;

/// <summary>
/// The chat hub at <c>/hubs/chat</c>: <c>Generate</c> and <c>Chat</c> stream <see cref="HubTokenChunk"/>s.
/// Cancelling the stream on the client (the .NET client: cancel the token given to <c>StreamAsync</c>; only leaving the
/// loop sends nothing; the JS client: <c>subscription.dispose()</c>), or disconnecting, cancels the generation and frees
/// its engine resources.
/// Refusals (invalid field, overload, not ready) are <see cref="HubException"/>s whose message names the field.
/// </summary>
public sealed class ChatHub(ApiContext api) : Hub
{
    public const string Path = "/hubs/chat";
    private static readonly Func<string, string> Field = GenerationPlanner.CamelCase;

    public async IAsyncEnumerable<HubTokenChunk> Generate(GenerateRequest request, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var running = await StartAsync(() =>
        {
            if (request is null) throw OpenAiException.Invalid("request", "the request object is missing (null).");
            api.Model.CheckModel(request.Model, Field);
            int[] prompt = (request.Prompt, request.PromptTokenIds) switch
            {
                ({ } text, null) => api.Model.Tokenizer.EncodePrompt(text),
                (null, { } ids) => ids.ToArray(),
                (null, null) => throw OpenAiException.Invalid("prompt", "prompt (or promptTokenIds) is required."),
                _ => throw OpenAiException.Invalid("prompt", "give either prompt or promptTokenIds, not both."),
            };
            return api.Planner(Field).Plan(NewId(), request, [prompt], request.MaxTokens, request.Logprobs == true, request.TopLogprobs ?? 0);
        }, cancellationToken).ConfigureAwait(false);
        await foreach (var c in RelayAsync(running, cancellationToken).ConfigureAwait(false)) yield return c;
    }

    public async IAsyncEnumerable<HubTokenChunk> Chat(ChatRequest request, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var running = await StartAsync(() =>
        {
            if (request is null) throw OpenAiException.Invalid("request", "the request object is missing (null).");
            api.Model.CheckModel(request.Model, Field);
            var prompt = api.Model.EncodeChat(request.Messages, Field, true, request.Tools, request.ChatTemplateKwargs);
            return api.Planner(Field).Plan(NewId(), request, [prompt], request.MaxTokens, request.Logprobs == true, request.TopLogprobs ?? 0);
        }, cancellationToken).ConfigureAwait(false);
        await foreach (var c in RelayAsync(running, cancellationToken).ConfigureAwait(false)) yield return c;
    }

    private static string NewId() => "hub-" + Middleware.RequestIds.New();

    private async Task<RunningJob> StartAsync(Func<GenerationJob> plan, CancellationToken ct)
    {
        try
        {
            var job = plan();
            api.EnsureReady();
            return await api.Runner.StartAsync(job, ct).ConfigureAwait(false);
        }
        catch (Exception e) when (ApiErrors.Translate(e, api.Options, Field) is { } error)
        {
            throw new HubException(error.Message);
        }
    }

    private async IAsyncEnumerable<HubTokenChunk> RelayAsync(RunningJob running, [EnumeratorCancellation] CancellationToken ct)
    {
        await using var _ = running;
        var tokens = api.Model.Tokens;
        await foreach (var (i, c) in running.ReadAllAsync(ct).ConfigureAwait(false))
            yield return ToHub(i, c, tokens, running.Job.Logprobs);
    }

    private static HubTokenChunk ToHub(int index, TokenChunk c, TokenText tokens, bool logprobs) => new()
    {
        RequestId = c.RequestId,
        Index = index,
        Text = c.Text,
        TokenId = c.TokenId,
        Logprob = logprobs ? c.Token?.Logprob : null,
        TopLogprobs = logprobs && c.Token is { TopLogprobs.Count: > 0 } t
            ? t.TopLogprobs.Select(a => new HubTopLogprob { TokenId = a.TokenId, Token = tokens.Text(a.TokenId), Logprob = a.Logprob }).ToList()
            : null,
        FinishReason = c.FinishReason?.ToString().ToLowerInvariant(),
        Usage = c.Usage is { } u ? new HubUsage { PromptTokens = u.PromptTokens, CompletionTokens = u.CompletionTokens, TotalTokens = u.TotalTokens } : null,
        Error = c.Error,
        Experts = c.ExpertsByLayer?.ToArray(),
    };
}
