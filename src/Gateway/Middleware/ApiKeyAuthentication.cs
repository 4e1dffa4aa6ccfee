using System.Security.Cryptography;
using System.Text;
using MoeServer.Gateway.OpenAi;
using MoeServer.Gateway.Options;

namespace MoeServer.Gateway.Middleware;

/// <summary>
/// Optional bearer keys (<c>moe.gateway.api-keys</c>; off when empty) on the API and the chat hub. Health, readiness,
/// metrics and the chat page stay open. The hub also takes the key as <c>access_token</c> (how SignalR clients send
/// it over WebSockets).
/// </summary>
internal static class ApiKeyAuthentication
{
    public static IApplicationBuilder UseApiKeys(this IApplicationBuilder app, GatewayOptions options)
    {
        if (options.ApiKeys.Count == 0) return app;
        var keys = options.ApiKeys.Select(k => Encoding.UTF8.GetBytes(k)).ToArray();
        return app.Use(async (ctx, next) =>
        {
            var path = ctx.Request.Path;
            bool guarded = path.StartsWithSegments("/v1") || path.StartsWithSegments("/tokenize")
                || path.StartsWithSegments("/detokenize") || path.StartsWithSegments("/hubs");
            if (!guarded || Accepted(ctx, keys))
            {
                await next(ctx).ConfigureAwait(false);
                return;
            }
            ctx.Response.Headers.WWWAuthenticate = "Bearer";
            await ApiErrors.WriteAsync(ctx, new OpenAiException(StatusCodes.Status401Unauthorized,
                "Missing or invalid API key: send it as Authorization: Bearer <key>.", "authentication_error", null, "invalid_api_key"), options).ConfigureAwait(false);
        });
    }

    private static bool Accepted(HttpContext ctx, byte[][] keys)
    {
        string auth = ctx.Request.Headers.Authorization.ToString();
        string? given = auth.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase) ? auth[7..].Trim()
            : ctx.Request.Path.StartsWithSegments("/hubs") ? ctx.Request.Query["access_token"].ToString() : null;
        if (string.IsNullOrEmpty(given)) return false;
        var bytes = Encoding.UTF8.GetBytes(given);
        return keys.Any(k => CryptographicOperations.FixedTimeEquals(k, bytes));
    }
}
