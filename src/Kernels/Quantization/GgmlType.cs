#pragma warning disable CA1707 // the names are ggml's (GGML_TYPE_Q4_K, QK_K), kept so they read the same as the format they describe

namespace MoeServer.Kernels.Quantization;

/// <summary>
/// Tensor element types, numbered as ggml numbers them (<c>enum ggml_type</c> in ggml.h), so the value is what a
/// GGUF tensor-info record stores. Only the types this project reads or writes are listed.
/// </summary>
public enum GgmlType
{
    /// <summary>IEEE fp32.</summary>
    F32 = 0,

    /// <summary>IEEE fp16 (the fallback for tensors no block format fits).</summary>
    F16 = 1,

    /// <summary>32 weights: fp16 scale d, 16 bytes of 4-bit quants; w = d·(q − 8).</summary>
    Q4_0 = 2,

    /// <summary>32 weights: fp16 d and m, 16 bytes of 4-bit quants; w = d·q + m.</summary>
    Q4_1 = 3,

    /// <summary>32 weights: fp16 d, 4 bytes of fifth bits, 16 bytes of low nibbles; w = d·(q − 16).</summary>
    Q5_0 = 6,

    /// <summary>32 weights: fp16 d and m, 4 bytes of fifth bits, 16 bytes of low nibbles; w = d·q + m.</summary>
    Q5_1 = 7,

    /// <summary>32 weights: fp16 d, 32 signed bytes; w = d·q.</summary>
    Q8_0 = 8,

    /// <summary>32 values: fp16 d, fp16 s = d·Σq, 32 signed bytes (activation format for Q4_1/Q5_1).</summary>
    Q8_1 = 9,

    /// <summary>256 weights: fp16 d and dmin, 12 bytes of packed 6-bit scales/mins for 8 sub-blocks of 32, 128 bytes of nibbles.</summary>
    Q4_K = 12,

    /// <summary>256 weights: as Q4_K plus 32 bytes of fifth bits.</summary>
    Q5_K = 13,

    /// <summary>256 weights: 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, 16 int8 scales (one per 16), fp16 d.</summary>
    Q6_K = 14,

    /// <summary>256 values: fp32 d, 256 signed bytes, 16 int16 sums of 16 (activation format for the K-quants).</summary>
    Q8_K = 15,
}

/// <summary>Block geometry of each <see cref="GgmlType"/> (ggml's <c>blck_size</c> and <c>type_size</c>).</summary>
public static class GgmlTypeInfo
{
    /// <summary>Weights per super-block of the K-quants (ggml's QK_K).</summary>
    public const int QK_K = 256;

    /// <summary>Weights per block of the legacy formats (QK4_0 = QK4_1 = QK5_0 = QK5_1 = QK8_0 = QK8_1).</summary>
    public const int QK = 32;

    /// <summary>Elements per block.</summary>
    public static int BlockSize(GgmlType type) => type switch
    {
        GgmlType.F32 or GgmlType.F16 => 1,
        GgmlType.Q4_0 or GgmlType.Q4_1 or GgmlType.Q5_0 or GgmlType.Q5_1 or GgmlType.Q8_0 or GgmlType.Q8_1 => QK,
        GgmlType.Q4_K or GgmlType.Q5_K or GgmlType.Q6_K or GgmlType.Q8_K => QK_K,
        _ => throw new NotSupportedException($"ggml type {type} is not supported."),
    };

    /// <summary>Bytes per block.</summary>
    public static int TypeSize(GgmlType type) => type switch
    {
        GgmlType.F32 => 4,
        GgmlType.F16 => 2,
        GgmlType.Q4_0 => 2 + 16,
        GgmlType.Q4_1 => 2 + 2 + 16,
        GgmlType.Q5_0 => 2 + 4 + 16,
        GgmlType.Q5_1 => 2 + 2 + 4 + 16,
        GgmlType.Q8_0 => 2 + 32,
        GgmlType.Q8_1 => 2 + 2 + 32,
        GgmlType.Q4_K => 2 + 2 + 12 + 128,
        GgmlType.Q5_K => 2 + 2 + 12 + 32 + 128,
        GgmlType.Q6_K => 128 + 64 + 16 + 2,
        GgmlType.Q8_K => 4 + 256 + (16 * 2),
        _ => throw new NotSupportedException($"ggml type {type} is not supported."),
    };

    /// <summary>Bytes of one row of <paramref name="n"/> elements (ggml_row_size); n must be a whole number of blocks.</summary>
    public static long RowSize(GgmlType type, long n)
    {
        int bs = BlockSize(type);
        if (n % bs != 0)
        {
            throw new ArgumentException($"A {type} row needs a multiple of {bs} elements; got {n}.", nameof(n));
        }

        return n / bs * TypeSize(type);
    }

    /// <summary>Whether a row of <paramref name="n"/> elements is a whole number of <paramref name="type"/> blocks.</summary>
    public static bool Fits(GgmlType type, long n) => n % BlockSize(type) == 0;

    /// <summary>
    /// The activation format the integer dot product of a weight type pairs with (ggml's <c>vec_dot_type</c>):
    /// Q8_0 for Q4_0/Q5_0/Q8_0, Q8_1 for Q4_1/Q5_1, Q8_K for the K-quants; F32 for F16/F32 weights.
    /// </summary>
    public static GgmlType VecDotType(GgmlType type) => type switch
    {
        GgmlType.Q4_0 or GgmlType.Q5_0 or GgmlType.Q8_0 => GgmlType.Q8_0,
        GgmlType.Q4_1 or GgmlType.Q5_1 => GgmlType.Q8_1,
        GgmlType.Q4_K or GgmlType.Q5_K or GgmlType.Q6_K => GgmlType.Q8_K,
        GgmlType.F16 or GgmlType.F32 => GgmlType.F32,
        _ => throw new NotSupportedException($"ggml type {type} has no dot product here."),
    };
}
