using MoeServer.Gateway.Serving;

namespace MoeServer.Gateway.OpenAi;

/// <summary>Maps the OpenAI-compatible routes and turns every refusal into an OpenAI-shaped error.</summary>
internal static class OpenAiEndpoints
{
    public static IEndpointRouteBuilder MapOpenAiApi(this IEndpointRouteBuilder app)
    {
        app.MapPost("/v1/completions", ctx => RunAsync(ctx, CompletionsEndpoint.HandleAsync));
        app.MapPost("/v1/chat/completions", ctx => RunAsync(ctx, ChatCompletionsEndpoint.HandleAsync));
        app.MapGet("/v1/models", ctx => RunAsync(ctx, ModelEndpoints.ListAsync));
        app.MapGet("/v1/models/{id}", ctx => RunAsync(ctx, ModelEndpoints.GetAsync));
        app.MapPost("/tokenize", ctx => RunAsync(ctx, ModelEndpoints.TokenizeAsync));
        app.MapPost("/detokenize", ctx => RunAsync(ctx, ModelEndpoints.DetokenizeAsync));
        // Other methods on the API routes outside /v1 answer like the rest of the API, not with an empty 405.
        foreach (string path in new[] { "/tokenize", "/detokenize" })
        {
            app.MapMethods(path, ["GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"], ctx => RunAsync(ctx, (c, _) => throw new OpenAiException(
                StatusCodes.Status405MethodNotAllowed, $"{c.Request.Method} is not allowed on {c.Request.Path}; use POST.", "invalid_request_error", null, "method_not_allowed")));
        }
        // Anything else under /v1 answers like OpenAI does, not with an empty 404/405.
        app.Map("/v1/{**rest}", ctx => RunAsync(ctx, (c, _) => throw new OpenAiException(StatusCodes.Status404NotFound,
            $"Unknown route {c.Request.Method} {c.Request.Path}.", "invalid_request_error", null, "unknown_url")));
        return app;
    }

    private static async Task RunAsync(HttpContext ctx, Func<HttpContext, ApiContext, Task> handler)
    {
        var api = ctx.RequestServices.GetRequiredService<ApiContext>();
        try
        {
            await handler(ctx, api).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (ctx.RequestAborted.IsCancellationRequested)
        {
            // The client went away; its generation was cancelled with it.
        }
        catch (Exception e) when (!ctx.Response.HasStarted && ApiErrors.Translate(e, api.Options, GenerationPlanner.SnakeCase) is { } error)
        {
            await ApiErrors.WriteAsync(ctx, error, api.Options).ConfigureAwait(false);
        }
    }
}
