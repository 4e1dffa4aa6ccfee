namespace MoeServer.Actors.Experts;

/// <summary>
/// Rows of fp32 activations [Rows, Width] travelling to or from an expert. On one node the array is passed by
/// reference; across nodes the serializer writes a dtype + shape header and the raw bytes.
/// </summary>
public sealed record ActivationBlock(int Rows, int Width, float[] Data)
{
    public long Bytes => (long)Rows * Width * sizeof(float);

    public static ActivationBlock Of(int rows, int width, float[] data)
    {
        if (data.LongLength != (long)rows * width)
            throw new ArgumentException($"an activation block of {rows}x{width} needs {(long)rows * width} floats, got {data.LongLength}", nameof(data));
        return new ActivationBlock(rows, width, data);
    }
}
