namespace MoeServer.Kernels.Formats;

/// <summary>Bytes <paramref name="Offset"/>..+<paramref name="Length"/> of a tensor's data (one expert's slice of a
/// fused tensor, or all of a per-expert tensor).</summary>
public readonly record struct CheckpointRange(TensorEntry Entry, long Offset, long Length);
