using MoeServer.Kernels.Config;
using MoeServer.Gateway.Serving;
using MoeServer.Kernels.Tokenization;

namespace MoeServer.Gateway.OpenAi;

/// <summary>GET /v1/models, POST /tokenize and /detokenize (vLLM's shapes).</summary>
internal static class ModelEndpoints
{
    private static readonly Func<string, string> Field = GenerationPlanner.SnakeCase;

    private static ModelCard Card(ServedModel m) => new(m.Name, "model", m.Created, "moe-server", m.Config.MaxPositionEmbeddings, m.Name,
        m.Config.NumExperts, m.Config.NumExpertsPerToken, m.Config.NumLayers, m.Config.Architecture.ToModelType(),
        new ModelSourceCard(m.Source.Format, m.Source.Architecture, m.Source.ContextLength, m.Source.FileType, m.Source.Files));

    public static Task ListAsync(HttpContext ctx, ApiContext api) =>
        ctx.Response.WriteAsJsonAsync(new ModelList("list", [Card(api.Model)]), OpenAiJson.Options, ctx.RequestAborted);

    public static Task GetAsync(HttpContext ctx, ApiContext api)
    {
        string id = ctx.Request.RouteValues["id"] as string ?? "";
        if (id != api.Model.Name)
            throw new OpenAiException(StatusCodes.Status404NotFound, $"The model `{id}` does not exist.", "invalid_request_error", "model", "model_not_found");
        return ctx.Response.WriteAsJsonAsync(Card(api.Model), OpenAiJson.Options, ctx.RequestAborted);
    }

    public static async Task TokenizeAsync(HttpContext ctx, ApiContext api)
    {
        var req = await ApiErrors.ReadBodyAsync<TokenizeRequest>(ctx).ConfigureAwait(false);
        api.Model.CheckModel(req.Model, Field);
        int[] tokens;
        if (req.Prompt is not null && req.Messages is not null) throw OpenAiException.Invalid("prompt", "give either prompt or messages, not both.");
        if (req.Prompt is not null) tokens = api.Model.Tokenizer.EncodePrompt(req.Prompt);
        else if (req.Messages is not null) tokens = api.Model.EncodeChat(req.Messages, Field, req.AddGenerationPrompt ?? true, req.Tools, req.ChatTemplateKwargs);
        else throw OpenAiException.Invalid("prompt", "prompt (a string) or messages is required.");
        await ctx.Response.WriteAsJsonAsync(new TokenizeResponse(tokens, tokens.Length, api.Model.Config.MaxPositionEmbeddings),
            OpenAiJson.Options, ctx.RequestAborted).ConfigureAwait(false);
    }

    public static async Task DetokenizeAsync(HttpContext ctx, ApiContext api)
    {
        var req = await ApiErrors.ReadBodyAsync<DetokenizeRequest>(ctx).ConfigureAwait(false);
        api.Model.CheckModel(req.Model, Field);
        if (req.Tokens is null) throw OpenAiException.Invalid("tokens", "tokens (a list of token ids) is required.");
        int vocab = api.Model.Config.VocabSize;
        for (int i = 0; i < req.Tokens.Count; i++)
            if ((uint)req.Tokens[i] >= (uint)vocab)
                throw OpenAiException.Invalid("tokens", $"tokens[{i}] = {req.Tokens[i]} is outside the vocabulary (0..{vocab - 1}).");
        await ctx.Response.WriteAsJsonAsync(new DetokenizeResponse(api.Model.Tokenizer.Decode(req.Tokens)), OpenAiJson.Options,
            ctx.RequestAborted).ConfigureAwait(false);
    }
}
