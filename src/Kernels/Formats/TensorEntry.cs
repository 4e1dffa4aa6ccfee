namespace MoeServer.Kernels.Formats;

/// <summary>Where one tensor's bytes lie in a safetensors file (offsets are absolute file offsets).</summary>
public sealed record TensorEntry(string Name, TensorDType DType, long[] Shape, long Offset, long ByteLength, string File)
{
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);
    public string ShapeText => "[" + string.Join(", ", Shape) + "]";
}
