using Akka.Configuration;

namespace MoeServer.Gateway.Ops;

/// <summary><c>moe.ops</c>: who may use the ops surface (/ops/*) and how long it waits for nodes (hocon/base.hocon).</summary>
public sealed record OpsOptions
{
    /// <summary>Bearer token every ops call must carry; empty: loopback callers only.</summary>
    public string Token { get; init; } = "";
    public TimeSpan AskTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>From HOCON; the environment variable MOE_OPS_TOKEN wins when set.</summary>
    public static OpsOptions FromConfig(Config c) => new()
    {
        Token = Environment.GetEnvironmentVariable("MOE_OPS_TOKEN") is { Length: > 0 } env ? env : c.GetString("moe.ops.token", ""),
        AskTimeout = c.GetTimeSpan("moe.ops.ask-timeout", TimeSpan.FromSeconds(5)),
    };
}
