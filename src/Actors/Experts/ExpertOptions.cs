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
    public TimeSpan RetryDeadline { get; init; } = TimeSpan.FromSeconds(45);
    public int NumberOfShards { get; init; } = 64;
    public WireDType WireDType { get; init; } = WireDType.F32;
    public bool WarmUp { get; init; } = true;
    public ExpertResidencyOptions Residency { get; init; } = new();
    public ExpertFailoverOptions Failover { get; init; } = new();

    public static ExpertOptions FromConfig(Config c)
    {
        var o = Read(c);
        var needed = ShardMoveTime(c);
        if (!o.Failover.Local && o.RetryDeadline < needed)
            throw new ArgumentException($"moe.experts.retry-deadline ({o.RetryDeadline.TotalSeconds:0.#} s) is shorter than a dead node's shards " +
                $"take to move ({needed.TotalSeconds:0.#} s: failure detection + stable-after + removal margin + 5 s of re-allocation), " +
                "so requests would fail while they move; raise it, or turn moe.experts.failover.local on");
        return o;
    }

    /// <summary>How long after a node dies its shards answer from elsewhere: the failure detector's acceptable pause, the
    /// split-brain resolver's stable-after, the removal margin (stable-after unless set) and ~5 s to re-allocate.</summary>
    public static TimeSpan ShardMoveTime(Config c)
    {
        var stable = c.GetTimeSpan("akka.cluster.split-brain-resolver.stable-after", TimeSpan.FromSeconds(20));
        var margin = c.GetString("akka.cluster.down-removal-margin", "off").Trim().ToLowerInvariant() is "off" or "" or "0"
            ? stable
            : c.GetTimeSpan("akka.cluster.down-removal-margin", stable);
        return c.GetTimeSpan("akka.cluster.failure-detector.acceptable-heartbeat-pause", TimeSpan.FromSeconds(3)) + stable + margin + TimeSpan.FromSeconds(5);
    }

    private static ExpertOptions Read(Config c) => new()
    {
        AskTimeout = c.GetTimeSpan("moe.experts.ask-timeout", TimeSpan.FromSeconds(3)),
        RetryDeadline = c.GetTimeSpan("moe.experts.retry-deadline", TimeSpan.FromSeconds(45)),
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
