using MoeServer.Kernels.Formats;

namespace MoeServer.Kernels.Checkpoints;

/// <summary>fp32 values to the raw bytes of a safetensors dtype (bf16 with round-to-nearest-even).</summary>
public static class FloatEncoding
{
    public static byte[] Encode(ReadOnlySpan<float> values, TensorDType dtype)
    {
        var bytes = new byte[values.Length * dtype.ElementSize()];
        switch (dtype)
        {
            case TensorDType.F32:
                System.Runtime.InteropServices.MemoryMarshal.AsBytes(values).CopyTo(bytes);
                break;
            case TensorDType.BF16:
                for (int i = 0; i < values.Length; i++)
                    BitConverter.TryWriteBytes(bytes.AsSpan(2 * i), ToBf16(values[i]));
                break;
            default:
                for (int i = 0; i < values.Length; i++)
                    BitConverter.TryWriteBytes(bytes.AsSpan(2 * i), BitConverter.HalfToUInt16Bits((Half)values[i]));
                break;
        }
        return bytes;
    }

    public static ushort ToBf16(float f)
    {
        uint bits = BitConverter.SingleToUInt32Bits(f);
        if (float.IsNaN(f)) return (ushort)((bits >> 16) | 0x40);
        uint rounding = 0x7FFF + ((bits >> 16) & 1);
        return (ushort)((bits + rounding) >> 16);
    }
}
