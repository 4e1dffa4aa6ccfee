using MoeServer.Kernels.Formats;
using MoeServer.Kernels.Native;

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
                Bf16Convert.ToBf16(values, System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(bytes.AsSpan()));
                break;
            default:
                for (int i = 0; i < values.Length; i++)
                    BitConverter.TryWriteBytes(bytes.AsSpan(2 * i), BitConverter.HalfToUInt16Bits((Half)values[i]));
                break;
        }
        return bytes;
    }
}
