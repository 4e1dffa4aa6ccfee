using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace MoeServer.Kernels.Native;

/// <summary>
/// The handful of float-vector operations the bf16 kernels use, abstracted over vector width so one
/// generic kernel body serves Vector512 and Vector256. Implementations are structs, so the JIT
/// specializes and inlines every call.
/// </summary>
/// <remarks>
/// A bf16 pair (2 × 16 bits) occupies one 32-bit lane. Loading 2·Count bf16 as Count floats gives, per
/// lane j, element 2j in the low half and element 2j+1 in the high half: the odd element as an fp32 is
/// <c>lane &amp; 0xFFFF0000</c>, the even one is <c>lane &lt;&lt; 16</c>. Two cheap ops convert 2·Count
/// weights, with no widening shuffle, provided the activations are split into even/odd halves once.
/// </remarks>
internal unsafe interface IVecOps<TV>
    where TV : struct
{
    /// <summary>Floats per vector.</summary>
    static abstract int Count { get; }

    static abstract TV Zero { get; }

    static abstract TV Load(float* p);

    /// <summary>Loads 2·Count bf16 values as Count raw 32-bit lanes.</summary>
    static abstract TV LoadBf16Pairs(ushort* p);

    /// <summary>fp32 values of the even-indexed bf16 in each lane.</summary>
    static abstract TV Even(TV pairs);

    /// <summary>fp32 values of the odd-indexed bf16 in each lane.</summary>
    static abstract TV Odd(TV pairs);

    /// <summary>a·b + c.</summary>
    static abstract TV Fma(TV a, TV b, TV c);

    static abstract TV Add(TV a, TV b);

    static abstract float Sum(TV v);

    static abstract void Store(float* p, TV v);

    /// <summary>
    /// Horizontal sums of a 2-row × 4-column accumulator tile, written as dst[0..3] = row 0 (columns 0..3),
    /// dst[4..7] = row 1.
    /// </summary>
    static abstract void ReduceTile(TV a00, TV a01, TV a02, TV a03, TV a10, TV a11, TV a12, TV a13, float* dst);
}

/// <summary>Shared horizontal reductions.</summary>
internal static unsafe class TileReduce
{
    /// <summary>8 accumulators → one vector of their sums, in argument order (hadd tree + lane fold; AVX).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Reduce8(Vector256<float> a0, Vector256<float> a1, Vector256<float> a2, Vector256<float> a3, Vector256<float> a4, Vector256<float> a5, Vector256<float> a6, Vector256<float> a7, float* dst)
    {
        if (Avx.IsSupported)
        {
            // Per 128-bit lane: hadd(hadd(a0,a1), hadd(a2,a3)) = [Σa0 Σa1 Σa2 Σa3] over that lane's 4 floats.
            Vector256<float> g0 = Avx.HorizontalAdd(Avx.HorizontalAdd(a0, a1), Avx.HorizontalAdd(a2, a3));
            Vector256<float> g1 = Avx.HorizontalAdd(Avx.HorizontalAdd(a4, a5), Avx.HorizontalAdd(a6, a7));
            Vector256.Store(Avx.Permute2x128(g0, g1, 0x20) + Avx.Permute2x128(g0, g1, 0x31), dst);
        }
        else
        {
            dst[0] = Vector256.Sum(a0);
            dst[1] = Vector256.Sum(a1);
            dst[2] = Vector256.Sum(a2);
            dst[3] = Vector256.Sum(a3);
            dst[4] = Vector256.Sum(a4);
            dst[5] = Vector256.Sum(a5);
            dst[6] = Vector256.Sum(a6);
            dst[7] = Vector256.Sum(a7);
        }
    }
}

/// <summary>256-bit implementation (AVX2 + FMA when accelerated).</summary>
internal readonly unsafe struct V256Ops : IVecOps<Vector256<float>>
{
    public static int Count => Vector256<float>.Count;

    public static Vector256<float> Zero => Vector256<float>.Zero;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load(float* p) => Vector256.Load(p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> LoadBf16Pairs(ushort* p) => Vector256.Load((float*)p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Even(Vector256<float> pairs) => Vector256.ShiftLeft(pairs.AsUInt32(), 16).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Odd(Vector256<float> pairs) => (pairs.AsUInt32() & Vector256.Create(0xFFFF0000u)).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Fma(Vector256<float> a, Vector256<float> b, Vector256<float> c) => Vector256.FusedMultiplyAdd(a, b, c);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Add(Vector256<float> a, Vector256<float> b) => a + b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Sum(Vector256<float> v) => Vector256.Sum(v);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store(float* p, Vector256<float> v) => Vector256.Store(v, p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void ReduceTile(Vector256<float> a00, Vector256<float> a01, Vector256<float> a02, Vector256<float> a03, Vector256<float> a10, Vector256<float> a11, Vector256<float> a12, Vector256<float> a13, float* dst)
        => TileReduce.Reduce8(a00, a01, a02, a03, a10, a11, a12, a13, dst);
}

/// <summary>512-bit implementation (AVX-512F when accelerated; a correct but slow software fallback otherwise).</summary>
internal readonly unsafe struct V512Ops : IVecOps<Vector512<float>>
{
    public static int Count => Vector512<float>.Count;

    public static Vector512<float> Zero => Vector512<float>.Zero;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load(float* p) => Vector512.Load(p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> LoadBf16Pairs(ushort* p) => Vector512.Load((float*)p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Even(Vector512<float> pairs) => Vector512.ShiftLeft(pairs.AsUInt32(), 16).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Odd(Vector512<float> pairs) => (pairs.AsUInt32() & Vector512.Create(0xFFFF0000u)).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Fma(Vector512<float> a, Vector512<float> b, Vector512<float> c) => Vector512.FusedMultiplyAdd(a, b, c);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Add(Vector512<float> a, Vector512<float> b) => a + b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Sum(Vector512<float> v) => Vector512.Sum(v);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store(float* p, Vector512<float> v) => Vector512.Store(v, p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void ReduceTile(Vector512<float> a00, Vector512<float> a01, Vector512<float> a02, Vector512<float> a03, Vector512<float> a10, Vector512<float> a11, Vector512<float> a12, Vector512<float> a13, float* dst)
        => TileReduce.Reduce8(Fold(a00), Fold(a01), Fold(a02), Fold(a03), Fold(a10), Fold(a11), Fold(a12), Fold(a13), dst);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Fold(Vector512<float> v) => v.GetLower() + v.GetUpper();
}
