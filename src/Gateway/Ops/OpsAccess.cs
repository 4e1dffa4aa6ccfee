using System.Net;
using System.Security.Cryptography;
using System.Text;

namespace MoeServer.Gateway.Ops;

/// <summary>
/// Guards /ops/*: with a token configured every call must carry <c>Authorization: Bearer TOKEN</c> (401 otherwise);
/// without one only loopback callers are served (403 otherwise). With a listener of its own (<c>moe.ops.urls</c>)
/// the ops surface is served on its ports only and those ports serve nothing else but health and metrics (404).
/// </summary>
internal static class OpsAccess
{
    public static IApplicationBuilder UseOpsAccess(this IApplicationBuilder app, OpsOptions options)
    {
        var opsPorts = options.Ports;
        return app.Use(async (ctx, next) =>
        {
            bool ops = ctx.Request.Path.StartsWithSegments("/ops");
            if (opsPorts.Count > 0 && PortRefusal(opsPorts, ops, ctx.Connection.LocalPort, ctx.Request.Path) is { } wrongPort)
            {
                await OpsResults.Error(StatusCodes.Status404NotFound, wrongPort.Code, wrongPort.Message).ExecuteAsync(ctx).ConfigureAwait(false);
                return;
            }
            if (ops) await Guard(options, ctx, next).ConfigureAwait(false);
            else await next(ctx).ConfigureAwait(false);
        });
    }

    /// <summary>With an ops listener: /ops/* only on its ports, and on them only /ops, health and metrics.</summary>
    public static (string Code, string Message)? PortRefusal(IReadOnlySet<int> opsPorts, bool opsPath, int localPort, PathString path)
    {
        bool onOpsPort = opsPorts.Contains(localPort);
        if (opsPath && !onOpsPort)
            return ("ops_not_on_this_port", $"the ops surface listens on port {string.Join(", ", opsPorts.Order())} (moe.ops.urls), not on this one");
        if (!opsPath && onOpsPort && !(path.StartsWithSegments("/health") || path.StartsWithSegments("/ready") || path.StartsWithSegments("/metrics")))
            return ("not_on_ops_port", "this port serves the ops surface only (/ops/*, /health, /ready, /metrics)");
        return null;
    }

    private static async Task Guard(OpsOptions options, HttpContext ctx, RequestDelegate next)
    {
        if (Refusal(options, ctx.Request.Headers.Authorization.ToString(), ctx.Connection.RemoteIpAddress) is { } refused)
        {
            await OpsResults.Error(refused.Status, refused.Code, refused.Message).ExecuteAsync(ctx).ConfigureAwait(false);
            return;
        }
        await next(ctx).ConfigureAwait(false);
    }

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
