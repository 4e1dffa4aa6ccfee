using Akka.Configuration;

namespace MoeServer.Gateway.Options;

/// <summary><c>moe.gateway</c>: the HTTP and SignalR surface (see hocon/base.hocon).</summary>
public sealed record GatewayOptions
{
    /// <summary>Name clients pass as "model"; empty = the checkpoint directory's name.</summary>
    public string ServedModelName { get; init; } = "";
    /// <summary>Accepted bearer keys; empty = no authentication.</summary>
    public IReadOnlyList<string> ApiKeys { get; init; } = [];
    public long MaxRequestBodyBytes { get; init; } = 4L << 20;
    /// <summary>OTLP endpoint for traces (e.g. http://127.0.0.1:4318); empty = traces are not exported.</summary>
    public string OtlpEndpoint { get; init; } = "";
    /// <summary>otlp-protocol: http/protobuf or grpc.</summary>
    public string OtlpProtocol { get; init; } = "http/protobuf";
    /// <summary>How long each expert has to answer /ready's ping.</summary>
    public TimeSpan ReadyPingTimeout { get; init; } = TimeSpan.FromSeconds(2);
    /// <summary>How long a /ready answer is reused before the experts are pinged again.</summary>
    public TimeSpan ReadyCacheFor { get; init; } = TimeSpan.FromSeconds(1);
    /// <summary>Retry-After seconds sent with 429.</summary>
    public int RetryAfterSeconds { get; init; } = 1;
    /// <summary>Chat template override: a built-in name or a .jinja path; empty = the checkpoint's own.</summary>
    public string ChatTemplate { get; init; } = "";

    public static GatewayOptions FromConfig(Config c) => new()
    {
        ServedModelName = c.GetString("moe.gateway.served-model-name", ""),
        ApiKeys = c.GetStringList("moe.gateway.api-keys")?.Where(k => !string.IsNullOrWhiteSpace(k)).ToArray() ?? [],
        MaxRequestBodyBytes = c.GetByteSize("moe.gateway.max-request-body-size") ?? (4L << 20),
        OtlpEndpoint = c.GetString("moe.gateway.otlp-endpoint", ""),
        OtlpProtocol = c.GetString("moe.gateway.otlp-protocol", "http/protobuf"),
        ReadyPingTimeout = c.GetTimeSpan("moe.gateway.ready-ping-timeout", TimeSpan.FromSeconds(2)),
        ReadyCacheFor = c.GetTimeSpan("moe.gateway.ready-cache-for", TimeSpan.FromSeconds(1)),
        RetryAfterSeconds = c.GetInt("moe.gateway.retry-after-seconds", 1),
        ChatTemplate = c.GetString("moe.gateway.chat-template", ""),
    };
}
