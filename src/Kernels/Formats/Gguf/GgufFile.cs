using System.Text;

namespace MoeServer.Kernels.Formats.Gguf;

/// <summary>GGUF metadata value types (the numbering of the GGUF v3 specification).</summary>
public enum GgufValueType : uint
{
    UInt8 = 0,
    Int8 = 1,
    UInt16 = 2,
    Int16 = 3,
    UInt32 = 4,
    Int32 = 5,
    Float32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    UInt64 = 10,
    Int64 = 11,
    Float64 = 12,
}

/// <summary>ggml tensor element types this project writes and reads.</summary>
public enum GgmlType : uint
{
    F32 = 0,
    F16 = 1,
    BF16 = 30,
}

/// <summary>A metadata value: a scalar, a string, or an array of one of those (element type given).</summary>
public sealed record GgufValue(GgufValueType Type, object Value, GgufValueType ElementType = GgufValueType.UInt8)
{
    public static GgufValue Of(string s) => new(GgufValueType.String, s);
    public static GgufValue Of(uint v) => new(GgufValueType.UInt32, v);
    public static GgufValue Of(int v) => new(GgufValueType.Int32, v);
    public static GgufValue Of(float v) => new(GgufValueType.Float32, v);
    public static GgufValue Of(bool v) => new(GgufValueType.Bool, v);
    public static GgufValue Strings(IReadOnlyList<string> values) => new(GgufValueType.Array, values.ToArray(), GgufValueType.String);
    public static GgufValue Int32s(IReadOnlyList<int> values) => new(GgufValueType.Array, values.ToArray(), GgufValueType.Int32);
    public static GgufValue Float32s(IReadOnlyList<float> values) => new(GgufValueType.Array, values.ToArray(), GgufValueType.Float32);

    public string AsString() => (string)Value;
    public uint AsUInt32() => Convert.ToUInt32(Value, System.Globalization.CultureInfo.InvariantCulture);
}

/// <summary>A tensor of a GGUF file: its ggml shape (<c>ne[0]</c>, the fastest-varying dimension, first) and raw bytes.</summary>
public sealed record GgufTensor(string Name, long[] Ne, GgmlType Type, byte[] Data)
{
    public long Elements => Ne.Aggregate(1L, (a, b) => a * b);

    public static int ElementSize(GgmlType t) => t switch
    {
        GgmlType.F32 => 4,
        GgmlType.F16 or GgmlType.BF16 => 2,
        _ => throw new ArgumentOutOfRangeException(nameof(t), t, "unsupported ggml type"),
    };
}

/// <summary>The content of a GGUF v3 file: ordered metadata and tensors.</summary>
public sealed class GgufFile
{
    public const uint Magic = 0x46554747; // "GGUF" little-endian
    public const uint Version = 3;
    public const int DefaultAlignment = 32;

    public List<KeyValuePair<string, GgufValue>> Metadata { get; } = [];
    public List<GgufTensor> Tensors { get; } = [];

    public GgufValue? Get(string key) => Metadata.FirstOrDefault(kv => kv.Key == key).Value;

    public void Set(string key, GgufValue value)
    {
        int i = Metadata.FindIndex(kv => kv.Key == key);
        if (i >= 0) Metadata[i] = new(key, value);
        else Metadata.Add(new(key, value));
    }

    internal static readonly Encoding Utf8 = new UTF8Encoding(false, throwOnInvalidBytes: true);
}
