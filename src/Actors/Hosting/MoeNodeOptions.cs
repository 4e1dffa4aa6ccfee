using Akka.Configuration;
using MoeServer.Kernels.Model;

namespace MoeServer.Actors.Hosting;

/// <summary><c>moe.node</c>: what this process is and where it sits in the cluster.</summary>
public sealed record MoeNodeOptions
{
    public NodeRole Role { get; init; } = NodeRole.All;
    public string ModelDir { get; init; } = "";
    public string Device { get; init; } = "cpu";
    public WeightPrecision Precision { get; init; } = WeightPrecision.BF16;
    public string Hostname { get; init; } = "127.0.0.1";
    public int ClusterPort { get; init; }
    /// <summary>host:port of each seed node.</summary>
    public IReadOnlyList<string> SeedNodes { get; init; } = [];
    public string SystemName { get; init; } = "moe";
    /// <summary>Without seed nodes: form a cluster of its own (on), or wait for an operator's join (off).</summary>
    public bool AutoJoin { get; init; } = true;
    /// <summary>A freeze longer than this ends the process (<see cref="Cluster.PauseFence"/>); null: off.</summary>
    public TimeSpan? PauseFence { get; init; }

    public static MoeNodeOptions FromConfig(Config c) => new()
    {
        PauseFence = ParsePauseFence(c),
        Role = NodeRoles.Parse(c.GetString("moe.node.role", "all")),
        ModelDir = c.GetString("moe.node.model", ""),
        Device = c.GetString("moe.node.device", "cpu"),
        Precision = ParsePrecision(c.GetString("moe.node.precision", "bf16")),
        Hostname = c.GetString("moe.node.hostname", "127.0.0.1"),
        ClusterPort = c.GetInt("moe.node.cluster-port", 0),
        SeedNodes = c.GetStringList("moe.node.seed-nodes", []).ToArray(),
        SystemName = c.GetString("moe.node.system-name", "moe"),
        AutoJoin = c.GetBoolean("moe.node.auto-join", true),
    };

    /// <summary><c>moe.node.pause-fence</c>: auto (the failure detector's acceptable pause + the split-brain resolver's
    /// stable-after: by then the others have downed this node), off, or a duration.</summary>
    public static TimeSpan? ParsePauseFence(Config c)
    {
        string v = c.GetString("moe.node.pause-fence", "auto").Trim().ToLowerInvariant();
        if (v is "off" or "false" or "no") return null;
        if (v == "auto")
            return c.GetTimeSpan("akka.cluster.failure-detector.acceptable-heartbeat-pause", TimeSpan.FromSeconds(8))
                   + c.GetTimeSpan("akka.cluster.split-brain-resolver.stable-after", TimeSpan.FromSeconds(15));
        var t = c.GetTimeSpan("moe.node.pause-fence", null);
        if (t <= TimeSpan.FromSeconds(1)) throw new ArgumentException($"moe.node.pause-fence: '{v}' is not auto, off or a duration over 1 s");
        return t;
    }

    public static WeightPrecision ParsePrecision(string s) => s.Trim().ToLowerInvariant() switch
    {
        "bf16" => WeightPrecision.BF16,
        "f32" or "fp32" => WeightPrecision.F32,
        _ => throw new ArgumentException($"moe.node.precision: unknown precision '{s}' (expected bf16 or f32)"),
    };

    /// <summary>akka.tcp addresses of the seed nodes.</summary>
    public IReadOnlyList<string> SeedAddresses() => SeedNodes.Select(s =>
    {
        var parts = s.Split(':');
        if (parts.Length != 2 || !int.TryParse(parts[1], out int port) || port <= 0)
            throw new ArgumentException($"seed node '{s}' is not host:port");
        return $"akka.tcp://{SystemName}@{parts[0]}:{port}";
    }).ToArray();
}
