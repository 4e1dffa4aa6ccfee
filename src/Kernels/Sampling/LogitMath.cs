using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace MoeServer.Kernels.Sampling;

/// <summary>
/// Vectorised passes over a logits row.
/// </summary>
/// <remarks>
/// Everything that decides which token is drawn is bit-for-bit reproducible on any machine: <see cref="Exp(float)"/>
/// is our own polynomial built from single-precision add, multiply and floor only (no FMA, no platform libm), its
/// Vector256 and scalar forms perform the same operations, and sums are taken in a fixed order (eight lanes per
/// <see cref="BlockSize"/> block, lanes added in order, blocks combined in double). Vector256 is used even where the
/// hardware lacks it (the runtime then emulates it lane by lane, with the same results).
/// </remarks>
internal static class LogitMath
{
    /// <summary>Elements per block of <see cref="ExpWeights"/>; block sums let a draw skip to the right block.</summary>
    public const int BlockSize = 1024;

    private const int Lanes = 8; // Vector256<float>.Count

    // Cephes expf: exp(x) = 2^n * exp(r), n = round(x / ln 2), r = x - n ln 2 (ln 2 split in two for precision).
    private const float Log2E = 1.44269504088896341f;
    private const float Ln2Hi = 0.693359375f;
    private const float Ln2Lo = -2.12194440e-4f;
    private const float P0 = 1.9875691500e-4f;
    private const float P1 = 1.3981999507e-3f;
    private const float P2 = 8.3334519073e-3f;
    private const float P3 = 4.1665795894e-2f;
    private const float P4 = 1.6666665459e-1f;
    private const float P5 = 5.0000001201e-1f;

    /// <summary>Arguments below this give 0 (exp would be subnormal; as a weight relative to a maximum of 1 it is
    /// negligible), which also makes -Infinity (a masked token) exactly 0.</summary>
    public const float ExpLowerLimit = -87.0f;

    /// <summary>exp(x) for x &lt;= 0 within a few ulp; 0 below <see cref="ExpLowerLimit"/>. Deterministic.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Exp(float x)
    {
        if (!(x >= ExpLowerLimit)) return 0f;
        float n = MathF.Floor(x * Log2E + 0.5f);
        float r = x - n * Ln2Hi;
        r = r - n * Ln2Lo;
        float r2 = r * r;
        float p = P0;
        p = p * r + P1;
        p = p * r + P2;
        p = p * r + P3;
        p = p * r + P4;
        p = p * r + P5;
        p = p * r2 + r;
        p = p + 1f;
        return p * BitConverter.Int32BitsToSingle(((int)n + 127) << 23);
    }

    /// <summary>Lane-wise <see cref="Exp(float)"/>, with exactly the same operations.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Exp(Vector256<float> x)
    {
        var valid = Vector256.GreaterThanOrEqual(x, Vector256.Create(ExpLowerLimit));
        x = Vector256.ConditionalSelect(valid, x, Vector256<float>.Zero);
        var n = Vector256.Floor(x * Vector256.Create(Log2E) + Vector256.Create(0.5f));
        var r = x - n * Vector256.Create(Ln2Hi);
        r = r - n * Vector256.Create(Ln2Lo);
        var r2 = r * r;
        var p = Vector256.Create(P0);
        p = p * r + Vector256.Create(P1);
        p = p * r + Vector256.Create(P2);
        p = p * r + Vector256.Create(P3);
        p = p * r + Vector256.Create(P4);
        p = p * r + Vector256.Create(P5);
        p = p * r2 + r;
        p = p + Vector256.Create(1f);
        var pow2n = Vector256.ShiftLeft(Vector256.ConvertToInt32(n) + Vector256.Create(127), 23).AsSingle();
        return Vector256.ConditionalSelect(valid, p * pow2n, Vector256<float>.Zero);
    }

    /// <summary>
    /// Maximum of <paramref name="logits"/>. Throws <see cref="ArgumentException"/> naming the first NaN or +Infinity
    /// (masked tokens may be -Infinity) and when the row is empty or entirely -Infinity.
    /// </summary>
    public static float MaxChecked(ReadOnlySpan<float> logits, string what)
    {
        if (logits.IsEmpty) throw new ArgumentException($"The {what} row is empty.", nameof(logits));
        float max = float.NegativeInfinity;
        bool bad = false;
        int i = 0;
        if (logits.Length >= Lanes)
        {
            ref float r = ref MemoryMarshal.GetReference(logits);
            var maxV = Vector256.Create(float.NegativeInfinity);
            var badV = Vector256<float>.Zero;
            var posInf = Vector256.Create(float.PositiveInfinity);
            for (; i <= logits.Length - Lanes; i += Lanes)
            {
                var v = Vector256.LoadUnsafe(ref r, (nuint)i);
                maxV = Vector256.Max(maxV, v);
                badV |= ~Vector256.Equals(v, v) | Vector256.Equals(v, posInf);
            }
            bad = badV != Vector256<float>.Zero;
            for (int lane = 0; lane < Lanes; lane++) max = Math.Max(max, maxV.GetElement(lane));
        }
        for (; i < logits.Length; i++)
        {
            float v = logits[i];
            if (float.IsNaN(v) || float.IsPositiveInfinity(v)) bad = true;
            else if (v > max) max = v;
        }

        if (bad)
        {
            for (int j = 0; j < logits.Length; j++)
            {
                if (float.IsNaN(logits[j]) || float.IsPositiveInfinity(logits[j]))
                    throw new ArgumentException($"The {what} row has {logits[j]} at token {j}.", nameof(logits));
            }
        }
        if (float.IsNegativeInfinity(max))
            throw new ArgumentException($"Every entry of the {what} row is -Infinity; no token can be sampled.", nameof(logits));
        return max;
    }

    /// <summary>Index of the first entry equal to <paramref name="max"/> (the first maximum of a checked row).</summary>
    public static int ArgMax(ReadOnlySpan<float> x, float max)
    {
        int i = 0;
        ref float r = ref MemoryMarshal.GetReference(x);
        var target = Vector256.Create(max);
        for (; i <= x.Length - Lanes; i += Lanes)
        {
            uint mask = Vector256.Equals(Vector256.LoadUnsafe(ref r, (nuint)i), target).ExtractMostSignificantBits();
            if (mask != 0) return i + System.Numerics.BitOperations.TrailingZeroCount(mask);
        }
        for (; i < x.Length; i++)
        {
            if (x[i] == max) return i;
        }
        return -1;
    }

    /// <summary>Writes to <paramref name="ids"/> the index of every entry &gt;= <paramref name="threshold"/>, in
    /// index order, and returns how many. -Infinity entries are never taken for a finite threshold.</summary>
    public static int CollectAtLeast(ReadOnlySpan<float> x, float threshold, Span<int> ids)
    {
        int count = 0, i = 0;
        ref float r = ref MemoryMarshal.GetReference(x);
        var t = Vector256.Create(threshold);
        for (; i <= x.Length - Lanes; i += Lanes)
        {
            uint mask = Vector256.GreaterThanOrEqual(Vector256.LoadUnsafe(ref r, (nuint)i), t).ExtractMostSignificantBits();
            while (mask != 0)
            {
                ids[count++] = i + System.Numerics.BitOperations.TrailingZeroCount(mask);
                mask &= mask - 1;
            }
        }
        for (; i < x.Length; i++)
        {
            if (x[i] >= threshold) ids[count++] = i;
        }
        return count;
    }

    /// <summary>Appends to <paramref name="ids"/> the index of every entry w with <paramref name="floor"/> &lt;= w &lt;
    /// <paramref name="ceiling"/>, in index order, adds their sum to <paramref name="mass"/> and returns how many.</summary>
    public static int CollectBand(ReadOnlySpan<float> w, float floor, float ceiling, Span<int> ids, ref double mass)
    {
        int count = 0, i = 0;
        ref float r = ref MemoryMarshal.GetReference(w);
        var lo = Vector256.Create(floor);
        var hi = Vector256.Create(ceiling);
        for (; i <= w.Length - Lanes; i += Lanes)
        {
            var v = Vector256.LoadUnsafe(ref r, (nuint)i);
            uint mask = (Vector256.GreaterThanOrEqual(v, lo) & Vector256.LessThan(v, hi)).ExtractMostSignificantBits();
            while (mask != 0)
            {
                int id = i + System.Numerics.BitOperations.TrailingZeroCount(mask);
                ids[count++] = id;
                mass += w[id];
                mask &= mask - 1;
            }
        }
        for (; i < w.Length; i++)
        {
            if (w[i] >= floor && w[i] < ceiling)
            {
                ids[count++] = i;
                mass += w[i];
            }
        }
        return count;
    }

    /// <summary>Sum over <paramref name="x"/> of Exp((x - shift) * scale).</summary>
    public static double SumExp(ReadOnlySpan<float> x, float shift, float scale) =>
        ExpWeights(x, shift, scale, 0f, [], []);

    /// <summary>
    /// Writes w = Exp((x - shift) * scale) to <paramref name="weights"/> (when not empty), with w below
    /// <paramref name="floor"/> set to 0, stores the sum of each <see cref="BlockSize"/> block in
    /// <paramref name="blockSums"/> (when not empty) and returns the total.
    /// </summary>
    public static double ExpWeights(
        ReadOnlySpan<float> x, float shift, float scale, float floor, Span<float> weights, Span<double> blockSums)
    {
        bool write = !weights.IsEmpty;
        ref float r = ref MemoryMarshal.GetReference(x);
        var shiftV = Vector256.Create(shift);
        var scaleV = Vector256.Create(scale);
        var floorV = Vector256.Create(floor);
        Span<float> lanes = stackalloc float[Lanes];
        double total = 0;
        for (int start = 0, block = 0; start < x.Length; start += BlockSize, block++)
        {
            int end = Math.Min(start + BlockSize, x.Length);
            var acc = Vector256<float>.Zero;
            int i = start;
            for (; i <= end - Lanes; i += Lanes)
            {
                var w = Exp((Vector256.LoadUnsafe(ref r, (nuint)i) - shiftV) * scaleV);
                w = Vector256.ConditionalSelect(Vector256.LessThan(w, floorV), Vector256<float>.Zero, w);
                if (write) w.StoreUnsafe(ref MemoryMarshal.GetReference(weights), (nuint)i);
                acc += w;
            }
            acc.CopyTo(lanes);
            float blockSum = 0f;
            for (int lane = 0; lane < Lanes; lane++) blockSum += lanes[lane];
            for (; i < end; i++)
            {
                float w = Exp((x[i] - shift) * scale);
                if (w < floor) w = 0f;
                if (write) weights[i] = w;
                blockSum += w;
            }
            if (!blockSums.IsEmpty) blockSums[block] = blockSum;
            total += blockSum;
        }
        return total;
    }
}
