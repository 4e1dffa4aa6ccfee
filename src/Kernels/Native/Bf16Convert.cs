using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace MoeServer.Kernels.Native;

/// <summary>
/// fp32 ↔ bf16 conversion; bf16 values are carried as their 16 raw bits in a <see cref="ushort"/>.
/// fp32→bf16 rounds to nearest, ties to even (what PyTorch does); NaN stays NaN (quieted, sign kept);
/// ±inf stays ±inf and finite values that round past the largest bf16 become ±inf. bf16→fp32 is exact.
/// </summary>
public static class Bf16Convert
{
    /// <summary>fp32 → bf16 bits, round to nearest even.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort ToBf16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if ((bits & 0x7FFF_FFFFu) > 0x7F80_0000u)
        {
            return (ushort)((bits >> 16) | 0x0040u);
        }

        return (ushort)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
    }

    /// <summary>bf16 bits → fp32 (exact).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ToSingle(ushort bf16) => BitConverter.UInt32BitsToSingle((uint)bf16 << 16);

    /// <summary>Converts <paramref name="source"/> to bf16 into <paramref name="destination"/> (at least as long).</summary>
    public static void ToBf16(ReadOnlySpan<float> source, Span<ushort> destination)
    {
        if (destination.Length < source.Length)
        {
            throw new ArgumentException("Destination is shorter than the source.", nameof(destination));
        }

        ReadOnlySpan<uint> src = MemoryMarshal.Cast<float, uint>(source);
        int n = src.Length;
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            for (; i + 32 <= n; i += 32)
            {
                Vector512<ushort> r = Vector512.Narrow(
                    RoundToBf16(Vector512.Create(src.Slice(i, 16))),
                    RoundToBf16(Vector512.Create(src.Slice(i + 16, 16))));
                r.CopyTo(destination.Slice(i, 32));
            }
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            for (; i + 16 <= n; i += 16)
            {
                Vector256<ushort> r = Vector256.Narrow(
                    RoundToBf16(Vector256.Create(src.Slice(i, 8))),
                    RoundToBf16(Vector256.Create(src.Slice(i + 8, 8))));
                r.CopyTo(destination.Slice(i, 16));
            }
        }

        for (; i < n; i++)
        {
            destination[i] = ToBf16(source[i]);
        }
    }

    /// <summary>Converts bf16 <paramref name="source"/> to fp32 into <paramref name="destination"/> (at least as long).</summary>
    public static void ToSingle(ReadOnlySpan<ushort> source, Span<float> destination)
    {
        if (destination.Length < source.Length)
        {
            throw new ArgumentException("Destination is shorter than the source.", nameof(destination));
        }

        Span<uint> dst = MemoryMarshal.Cast<float, uint>(destination);
        int n = source.Length;
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            for (; i + 32 <= n; i += 32)
            {
                Vector512<ushort> v = Vector512.Create(source.Slice(i, 32));
                (Vector512<uint> lo, Vector512<uint> hi) = Vector512.Widen(v);
                Vector512.ShiftLeft(lo, 16).CopyTo(dst.Slice(i, 16));
                Vector512.ShiftLeft(hi, 16).CopyTo(dst.Slice(i + 16, 16));
            }
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            for (; i + 16 <= n; i += 16)
            {
                Vector256<ushort> v = Vector256.Create(source.Slice(i, 16));
                (Vector256<uint> lo, Vector256<uint> hi) = Vector256.Widen(v);
                Vector256.ShiftLeft(lo, 16).CopyTo(dst.Slice(i, 8));
                Vector256.ShiftLeft(hi, 16).CopyTo(dst.Slice(i + 8, 8));
            }
        }

        for (; i < n; i++)
        {
            destination[i] = ToSingle(source[i]);
        }
    }

    /// <summary>Rounds fp32 bit patterns to bf16, result in the low 16 bits of each lane.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<uint> RoundToBf16(Vector512<uint> bits)
    {
        Vector512<uint> rounded = Vector512.ShiftRightLogical(bits + Vector512.Create(0x7FFFu) + (Vector512.ShiftRightLogical(bits, 16) & Vector512<uint>.One), 16);
        Vector512<uint> nan = Vector512.GreaterThan(bits & Vector512.Create(0x7FFF_FFFFu), Vector512.Create(0x7F80_0000u));
        return Vector512.ConditionalSelect(nan, Vector512.ShiftRightLogical(bits, 16) | Vector512.Create(0x0040u), rounded);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<uint> RoundToBf16(Vector256<uint> bits)
    {
        Vector256<uint> rounded = Vector256.ShiftRightLogical(bits + Vector256.Create(0x7FFFu) + (Vector256.ShiftRightLogical(bits, 16) & Vector256<uint>.One), 16);
        Vector256<uint> nan = Vector256.GreaterThan(bits & Vector256.Create(0x7FFF_FFFFu), Vector256.Create(0x7F80_0000u));
        return Vector256.ConditionalSelect(nan, Vector256.ShiftRightLogical(bits, 16) | Vector256.Create(0x0040u), rounded);
    }
}
