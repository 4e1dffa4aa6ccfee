using System.Net;
using System.Security.Cryptography;
using System.Text;

namespace MoeServer.Gateway.Ops;

/// <summary>
/// Guards /ops/*: with a token configured every call must carry <c>Authorization: Bearer TOKEN</c> (401 otherwise);
/// without one only loopback callers are served (403 otherwise).
/// </summary>
internal static class OpsAccess
{
    public static IApplicationBuilder UseOpsAccess(this IApplicationBuilder app, OpsOptions options) => app.Use(async (ctx, next) =>
    {
        if (!ctx.Request.Path.StartsWithSegments("/ops"))
        {
            await next(ctx).ConfigureAwait(false);
            return;
        }
        if (Refusal(options, ctx.Request.Headers.Authorization.ToString(), ctx.Connection.RemoteIpAddress) is { } refused)
        {
            await OpsResults.Error(refused.Status, refused.Code, refused.Message).ExecuteAsync(ctx).ConfigureAwait(false);
            return;
        }
        await next(ctx).ConfigureAwait(false);
    });

    /// <summary>Why a call is refused, or null when it may go on.</summary>
    public static (int Status, string Code, string Message)? Refusal(OpsOptions options, string authorization, IPAddress? remote)
    {
        if (options.Token.Length > 0)
        {
            const string prefix = "Bearer ";
            string given = authorization.StartsWith(prefix, StringComparison.OrdinalIgnoreCase) ? authorization[prefix.Length..].Trim() : "";
            bool ok = given.Length > 0 && CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(given), Encoding.UTF8.GetBytes(options.Token));
            return ok ? null : (StatusCodes.Status401Unauthorized, "invalid_ops_token",
                given.Length == 0 ? "the ops surface needs a token (Authorization: Bearer ...; moectl --token)" : "the ops token was refused");
        }
        if (remote is null || IPAddress.IsLoopback(remote)) return null;
        return (StatusCodes.Status403Forbidden, "ops_loopback_only",
            $"no ops token is configured (moe.ops.token or MOE_OPS_TOKEN), so the ops surface serves loopback callers only, not {remote}");
    }
}
