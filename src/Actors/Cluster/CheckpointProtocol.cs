namespace MoeServer.Actors.Cluster;

/// <summary>Nodes compare checkpoints before a node joins and when a member comes up.</summary>
public static class CheckpointProtocol
{
    public sealed record GetFingerprint;

    /// <summary>A node's checkpoint fingerprint (config.json + safetensors headers and sizes).</summary>
    public sealed record Fingerprint(string Value, string Node, string ModelDir);

    /// <summary>An operator asks this (local) node to join the cluster of the member at <paramref name="Address"/>: its
    /// checkpoint is compared first, as with seed nodes. Answered with <see cref="JoinStarted"/> or a failure.</summary>
    public sealed record JoinVia(string Address);

    public sealed record JoinStarted(string Message);
}
