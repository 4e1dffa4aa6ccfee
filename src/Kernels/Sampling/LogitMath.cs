using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace MoeServer.Kernels.Sampling;

/// <summary>
/// Vectorised passes over a logits row. Sums are taken per fixed block of <see cref="BlockSize"/> entries and
/// combined in double, so the result does not depend on the row length's alignment. On a machine without 256-bit
/// vectors the scalar path (MathF.Exp) can differ from Vector256.Exp in the last bits; a seeded draw can only change
/// from that if it lands within rounding of a boundary between two tokens.
/// </summary>
internal static class LogitMath
{
    /// <summary>Elements per block of <see cref="ExpWeights"/>; block sums let a draw skip to the right block.</summary>
    public const int BlockSize = 1024;

    /// <summary>
    /// Maximum of <paramref name="x"/>. Throws <see cref="ArgumentException"/> naming the first NaN or +Infinity
    /// (masked tokens may be -Infinity) and when every entry is -Infinity.
    /// </summary>
    public static float MaxChecked(ReadOnlySpan<float> logits, string what)
    {
        ReadOnlySpan<float> x = logits;
        if (x.IsEmpty) throw new ArgumentException($"The {what} row is empty.", nameof(logits));
        float max = float.NegativeInfinity;
        bool bad = false;
        int i = 0;
        if (Vector256.IsHardwareAccelerated && x.Length >= Vector256<float>.Count)
        {
            ref float r = ref MemoryMarshal.GetReference(x);
            var maxV = Vector256.Create(float.NegativeInfinity);
            var badV = Vector256<float>.Zero;
            var posInf = Vector256.Create(float.PositiveInfinity);
            for (; i <= x.Length - Vector256<float>.Count; i += Vector256<float>.Count)
            {
                var v = Vector256.LoadUnsafe(ref r, (nuint)i);
                maxV = Vector256.Max(maxV, v);
                badV |= ~Vector256.Equals(v, v) | Vector256.Equals(v, posInf);
            }
            bad = badV != Vector256<float>.Zero;
            for (int lane = 0; lane < Vector256<float>.Count; lane++)
                max = Math.Max(max, maxV.GetElement(lane));
        }
        for (; i < x.Length; i++)
        {
            float v = x[i];
            if (float.IsNaN(v) || float.IsPositiveInfinity(v)) bad = true;
            else if (v > max) max = v;
        }

        if (bad)
        {
            for (int j = 0; j < x.Length; j++)
            {
                if (float.IsNaN(x[j]) || float.IsPositiveInfinity(x[j]))
                    throw new ArgumentException($"The {what} row has {x[j]} at token {j}.", nameof(logits));
            }
        }
        if (float.IsNegativeInfinity(max))
            throw new ArgumentException($"Every entry of the {what} row is -Infinity; no token can be sampled.", nameof(logits));
        return max;
    }

    /// <summary>Sum over <paramref name="x"/> of exp((x - shift) * scale), in double across blocks.</summary>
    public static double SumExp(ReadOnlySpan<float> x, float shift, float scale) =>
        ExpWeights(x, shift, scale, 0f, [], []);

    /// <summary>
    /// Writes w = exp((x - shift) * scale) to <paramref name="weights"/> (when not empty), with w below
    /// <paramref name="floor"/> set to 0, stores the sum of each <see cref="BlockSize"/> block in
    /// <paramref name="blockSums"/> (when not empty) and returns the total.
    /// </summary>
    public static double ExpWeights(
        ReadOnlySpan<float> x, float shift, float scale, float floor, Span<float> weights, Span<double> blockSums)
    {
        bool write = !weights.IsEmpty;
        double total = 0;
        for (int start = 0, block = 0; start < x.Length; start += BlockSize, block++)
        {
            int end = Math.Min(start + BlockSize, x.Length);
            float blockSum = 0f;
            int i = start;
            if (Vector256.IsHardwareAccelerated)
            {
                ref float r = ref MemoryMarshal.GetReference(x);
                var shiftV = Vector256.Create(shift);
                var scaleV = Vector256.Create(scale);
                var floorV = Vector256.Create(floor);
                var acc = Vector256<float>.Zero;
                for (; i <= end - Vector256<float>.Count; i += Vector256<float>.Count)
                {
                    var w = Vector256.Exp((Vector256.LoadUnsafe(ref r, (nuint)i) - shiftV) * scaleV);
                    w = Vector256.ConditionalSelect(Vector256.LessThan(w, floorV), Vector256<float>.Zero, w);
                    if (write) w.StoreUnsafe(ref MemoryMarshal.GetReference(weights), (nuint)i);
                    acc += w;
                }
                blockSum = Vector256.Sum(acc);
            }
            for (; i < end; i++)
            {
                float w = MathF.Exp((x[i] - shift) * scale);
                if (w < floor) w = 0f;
                if (write) weights[i] = w;
                blockSum += w;
            }
            if (!blockSums.IsEmpty) blockSums[block] = blockSum;
            total += blockSum;
        }
        return total;
    }

    /// <summary>Index of the first maximum of a row already checked by <see cref="MaxChecked"/>.</summary>
    public static int ArgMax(ReadOnlySpan<float> x, float max) => x.IndexOf(max);
}
