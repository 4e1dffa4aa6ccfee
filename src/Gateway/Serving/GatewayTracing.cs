using System.Diagnostics;

namespace MoeServer.Gateway.Serving;

/// <summary>The gateway's OpenTelemetry activity source (spans: HTTP/hub request -> moe.admit -> engine steps).</summary>
public static class GatewayTracing
{
    public const string SourceName = "MoeServer.Gateway";
    public static ActivitySource Source { get; } = new(SourceName);
}
