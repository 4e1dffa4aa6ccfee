namespace MoeServer.Actors.Cluster;

/// <summary>Nodes compare checkpoints before a node joins and when a member comes up.</summary>
public static class CheckpointProtocol
{
    public sealed record GetFingerprint;

    /// <summary>A node's checkpoint fingerprint (config.json + safetensors headers and sizes).</summary>
    public sealed record Fingerprint(string Value, string Node, string ModelDir);
}
