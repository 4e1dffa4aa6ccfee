using System.Runtime.CompilerServices;

namespace MoeServer.Kernels.Quantization;

/// <summary>IEEE binary16 bits to and from fp32, rounding to nearest even (ggml's GGML_FP32_TO_FP16 / GGML_FP16_TO_FP32).</summary>
public static class Fp16
{
    /// <summary>fp16 bits to fp32 (exact).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ToFloat(ushort bits) => (float)BitConverter.UInt16BitsToHalf(bits);

    /// <summary>fp32 to fp16 bits, round to nearest even; overflow gives ±inf, NaN stays NaN.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort FromFloat(float value) => BitConverter.HalfToUInt16Bits((Half)value);
}
