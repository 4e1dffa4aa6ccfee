using Akka.Configuration;

namespace MoeServer.Actors.Experts;

/// <summary>Element type of activations on the wire to remote experts.</summary>
public enum WireDType
{
    F32,
    BF16,
}

/// <summary><c>moe.experts</c>: how the router talks to expert entities (see hocon/base.hocon).</summary>
public sealed record ExpertOptions
{
    public TimeSpan AskTimeout { get; init; } = TimeSpan.FromSeconds(3);
    public TimeSpan RetryDeadline { get; init; } = TimeSpan.FromSeconds(40);
    public int NumberOfShards { get; init; } = 64;
    public WireDType WireDType { get; init; } = WireDType.F32;
    public bool WarmUp { get; init; } = true;
    public ExpertResidencyOptions Residency { get; init; } = new();
    public ExpertFailoverOptions Failover { get; init; } = new();

    public static ExpertOptions FromConfig(Config c) => new()
    {
        AskTimeout = c.GetTimeSpan("moe.experts.ask-timeout", TimeSpan.FromSeconds(3)),
        RetryDeadline = c.GetTimeSpan("moe.experts.retry-deadline", TimeSpan.FromSeconds(40)),
        NumberOfShards = c.GetInt("moe.experts.number-of-shards", 64),
        WireDType = ParseWire(c.GetString("moe.experts.wire-dtype", "f32")),
        WarmUp = c.GetBoolean("moe.experts.warm-up", true),
        Residency = ExpertResidencyOptions.FromConfig(c),
        Failover = ExpertFailoverOptions.FromConfig(c),
    };

    public static WireDType ParseWire(string s) => s.Trim().ToLowerInvariant() switch
    {
        "f32" => WireDType.F32,
        "bf16" => WireDType.BF16,
        _ => throw new ArgumentException($"moe.experts.wire-dtype: unknown '{s}' (expected f32 or bf16)"),
    };
}
