using System.Text.Json;
using MoeServer.Actors.Generation;
using MoeServer.Gateway.Options;

namespace MoeServer.Gateway.OpenAi;

/// <summary>Maps what can go wrong with an API request to an OpenAI-shaped error response.</summary>
internal static class ApiErrors
{
    /// <summary>The error to answer with for an exception thrown before any response byte was written, or null when
    /// the exception is not the client's or the engine's to report (a bug: let it surface as a 500).</summary>
    public static OpenAiException? Translate(Exception e, GatewayOptions options, Func<string, string> fieldName) => e switch
    {
        OpenAiException o => o,
        InvalidGenerationRequestException g => OpenAiException.Invalid(fieldName(g.Field), g.Message),
        EngineOverloadedException o => new OpenAiException(StatusCodes.Status429TooManyRequests, o.Message, "rate_limit_error", null, "rate_limit_exceeded"),
        EngineUnavailableException u => new OpenAiException(StatusCodes.Status503ServiceUnavailable, u.Message, "service_unavailable", null, "engine_unavailable"),
        BadHttpRequestException { StatusCode: StatusCodes.Status413PayloadTooLarge } =>
            new OpenAiException(StatusCodes.Status413PayloadTooLarge,
                $"The request body is larger than this server's limit of {options.MaxRequestBodyBytes} bytes.",
                "invalid_request_error", null, "request_too_large"),
        BadHttpRequestException b => new OpenAiException(b.StatusCode, b.Message, "invalid_request_error"),
        _ => null,
    };

    public static async Task WriteAsync(HttpContext ctx, OpenAiException e, GatewayOptions options)
    {
        ctx.Response.StatusCode = e.Status;
        if (e.Status == StatusCodes.Status429TooManyRequests)
            ctx.Response.Headers.RetryAfter = options.RetryAfterSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture);
        await ctx.Response.WriteAsJsonAsync(e.ToBody(), OpenAiJson.Options, ctx.RequestAborted).ConfigureAwait(false);
    }

    /// <summary>Reads a JSON request body, turning every problem into a 400 that names the field (or 413).</summary>
    public static async Task<T> ReadBodyAsync<T>(HttpContext ctx) where T : class
    {
        if (ctx.Request.ContentType is { } ct && !ct.Contains("json", StringComparison.OrdinalIgnoreCase))
            throw new OpenAiException(StatusCodes.Status415UnsupportedMediaType, $"Content-Type must be application/json; got {ct}.", "invalid_request_error");
        try
        {
            var body = await JsonSerializer.DeserializeAsync<T>(ctx.Request.Body, OpenAiJson.Options, ctx.RequestAborted).ConfigureAwait(false);
            return body ?? throw new OpenAiException(StatusCodes.Status400BadRequest, "The request body must be a JSON object.", "invalid_request_error");
        }
        catch (JsonException e)
        {
            string? param = FieldOf(e.Path);
            string what = e.InnerException is InvalidOperationException or FormatException || e.Message.StartsWith("The JSON value could not be converted", StringComparison.Ordinal)
                ? "has the wrong type"
                : e.Message.Split(" Path:", 2)[0].TrimEnd('.');
            string message = param is null
                ? $"The request body is not valid JSON: {e.Message}"
                : $"{param} {(e.Message.StartsWith("The JSON value", StringComparison.Ordinal) ? "has the wrong type or is out of range" : what)}.";
            throw new OpenAiException(StatusCodes.Status400BadRequest, message, "invalid_request_error", param);
        }
        catch (IOException e) when (e is not BadHttpRequestException)
        {
            // The body's framing broke while it was read (Kestrel reports e.g. an overlong chunk size this way, not as a
            // BadHttpRequestException), or the client went away mid-body.
            ctx.RequestAborted.ThrowIfCancellationRequested();
            throw new OpenAiException(StatusCodes.Status400BadRequest, $"The request body could not be read: {e.Message}", "invalid_request_error");
        }
    }

    /// <summary>"$.messages[0].content" -> "messages[0].content"; "$" or null -> null.</summary>
    private static string? FieldOf(string? path)
    {
        if (string.IsNullOrEmpty(path) || path == "$") return null;
        return path.StartsWith("$.", StringComparison.Ordinal) ? path[2..] : path.TrimStart('$');
    }
}
