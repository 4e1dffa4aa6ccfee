namespace MoeServer.Gateway.Middleware;

/// <summary>
/// Gives every request an id: the client's <c>x-request-id</c> when it sends a usable one (1-128 characters,
/// letters, digits and -_.:), otherwise a new one. It is echoed in the response header, used as the engine's request
/// id (so it appears in every log line about the request, on every node) and in the response ids.
/// </summary>
internal static class RequestIds
{
    public const string Header = "x-request-id";
    private const string ItemKey = "moe.request-id";
    private const string ArrivalKey = "moe.arrival";

    public static IApplicationBuilder UseRequestIds(this IApplicationBuilder app) => app.Use((ctx, next) =>
    {
        string id = ctx.Request.Headers[Header].ToString() is { } given && IsUsable(given) ? given : New();
        ctx.Items[ItemKey] = id;
        ctx.Items[ArrivalKey] = System.Diagnostics.Stopwatch.GetTimestamp();
        ctx.Response.Headers[Header] = id;
        System.Diagnostics.Activity.Current?.SetTag("moe.request_id", id);
        return next(ctx);
    });

    public static string Of(HttpContext ctx) => ctx.Items[ItemKey] as string ?? New();

    /// <summary>Stopwatch timestamp of the request's arrival (latency metrics count from here).</summary>
    public static long ArrivalOf(HttpContext ctx) => ctx.Items[ArrivalKey] is long t ? t : System.Diagnostics.Stopwatch.GetTimestamp();

    public static string New() => Guid.NewGuid().ToString("N")[..24];

    private static bool IsUsable(string s) =>
        s.Length is > 0 and <= 128 && s.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' or ':');
}
