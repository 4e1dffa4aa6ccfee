using System.Buffers.Binary;
using System.Collections;
using System.Diagnostics.CodeAnalysis;
using System.Text.Json;

namespace MoeServer.Kernels.Tests.Reference;

/// <summary>One tensor decoded to float64, row-major.</summary>
public sealed record ReferenceTensor(int[] Shape, double[] Data)
{
    public long ElementCount => Data.LongLength;
}

/// <summary>
/// Minimal, self-contained safetensors reader for the float64 oracle. It reads either
/// model.safetensors or model.safetensors.index.json + shards, and decodes F32/BF16/F16/F64
/// to double on access (lazy: only the header is read up front).
/// Deliberately shares no code with src/ so a reader bug there cannot hide here.
/// </summary>
[SuppressMessage("Naming", "CA1710", Justification = "Name fixed by the test brief.")]
public sealed class ReferenceSafetensors : IReadOnlyDictionary<string, ReferenceTensor>
{
    private sealed record Entry(string File, string DType, int[] Shape, long AbsoluteOffset, long ByteLength);

    private readonly Dictionary<string, Entry> _entries;

    private ReferenceSafetensors(Dictionary<string, Entry> entries) => _entries = entries;

    /// <summary>Opens a checkpoint directory (index + shards preferred when the index exists).</summary>
    public static ReferenceSafetensors OpenDirectory(string dir)
    {
        string index = Path.Combine(dir, "model.safetensors.index.json");
        if (File.Exists(index))
            return OpenIndex(index);
        string single = Path.Combine(dir, "model.safetensors");
        if (File.Exists(single))
            return OpenFile(single);
        throw new FileNotFoundException($"No model.safetensors or model.safetensors.index.json in '{dir}'.");
    }

    /// <summary>Opens one .safetensors file.</summary>
    public static ReferenceSafetensors OpenFile(string path) => new(ReadHeader(path));

    /// <summary>Opens an index.json; the weight_map is authoritative for which shard holds which tensor.</summary>
    public static ReferenceSafetensors OpenIndex(string indexPath)
    {
        string dir = Path.GetDirectoryName(Path.GetFullPath(indexPath))!;
        using var doc = JsonDocument.Parse(File.ReadAllText(indexPath));
        if (!doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
            throw new InvalidDataException($"'{indexPath}' has no weight_map object.");

        var shardHeaders = new Dictionary<string, Dictionary<string, Entry>>(StringComparer.Ordinal);
        var entries = new Dictionary<string, Entry>(StringComparer.Ordinal);
        foreach (var prop in map.EnumerateObject())
        {
            string shard = prop.Value.GetString() ?? throw new InvalidDataException($"Null shard for '{prop.Name}'.");
            if (!shardHeaders.TryGetValue(shard, out var header))
            {
                header = ReadHeader(Path.Combine(dir, shard));
                shardHeaders[shard] = header;
            }
            if (!header.TryGetValue(prop.Name, out var entry))
                throw new InvalidDataException($"weight_map says '{prop.Name}' is in '{shard}', but that shard lacks it.");
            entries[prop.Name] = entry;
        }
        return new ReferenceSafetensors(entries);
    }

    private static Dictionary<string, Entry> ReadHeader(string path)
    {
        using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        Span<byte> lenBytes = stackalloc byte[8];
        fs.ReadExactly(lenBytes);
        ulong headerLen = BinaryPrimitives.ReadUInt64LittleEndian(lenBytes);
        if (headerLen > (ulong)(fs.Length - 8))
            throw new InvalidDataException($"'{path}': header length {headerLen} exceeds file size {fs.Length}.");
        var headerBytes = new byte[(int)headerLen];
        fs.ReadExactly(headerBytes);
        long dataStart = 8 + (long)headerLen;
        long dataLen = fs.Length - dataStart;

        var result = new Dictionary<string, Entry>(StringComparer.Ordinal);
        using var doc = JsonDocument.Parse(headerBytes);
        foreach (var prop in doc.RootElement.EnumerateObject())
        {
            if (prop.Name == "__metadata__")
                continue;
            var v = prop.Value;
            string dtype = v.GetProperty("dtype").GetString() ?? throw new InvalidDataException($"'{prop.Name}': null dtype.");
            int[] shape = v.GetProperty("shape").EnumerateArray().Select(e => e.GetInt32()).ToArray();
            long[] offsets = v.GetProperty("data_offsets").EnumerateArray().Select(e => e.GetInt64()).ToArray();
            if (offsets.Length != 2 || offsets[0] < 0 || offsets[1] < offsets[0] || offsets[1] > dataLen)
                throw new InvalidDataException($"'{path}': bad data_offsets for '{prop.Name}'.");
            long count = 1;
            foreach (int d in shape)
            {
                if (d < 0) throw new InvalidDataException($"'{prop.Name}': negative dimension.");
                count *= d;
            }
            int size = ElementSize(dtype);
            // Unknown dtypes (size 0) are kept so the file still opens; decoding them throws.
            if (size > 0 && count * size != offsets[1] - offsets[0])
                throw new InvalidDataException(
                    $"'{prop.Name}': {count} x {dtype} needs {count * size} bytes, offsets span {offsets[1] - offsets[0]}.");
            result[prop.Name] = new Entry(path, dtype, shape, dataStart + offsets[0], offsets[1] - offsets[0]);
        }
        return result;
    }

    private static int ElementSize(string dtype) => dtype switch
    {
        "F64" => 8,
        "F32" => 4,
        "BF16" or "F16" => 2,
        _ => 0,
    };

    /// <summary>The stored dtype string of a tensor (e.g. "BF16").</summary>
    public string DTypeOf(string name) => _entries[name].DType;

    /// <summary>The shape of a tensor without decoding it.</summary>
    public int[] ShapeOf(string name) => (int[])_entries[name].Shape.Clone();

    /// <summary>Reads and decodes one tensor to float64.</summary>
    public ReferenceTensor Read(string name)
    {
        if (!_entries.TryGetValue(name, out var e))
            throw new KeyNotFoundException($"Tensor '{name}' is not in the checkpoint.");
        if (ElementSize(e.DType) == 0)
            throw new NotSupportedException($"Tensor '{name}' has dtype {e.DType}; only F64/F32/BF16/F16 decode to double.");
        var bytes = new byte[e.ByteLength];
        using (var handle = File.OpenHandle(e.File, FileMode.Open, FileAccess.Read, FileShare.Read))
        {
            int got = 0;
            while (got < bytes.Length)
            {
                int n = RandomAccess.Read(handle, bytes.AsSpan(got), e.AbsoluteOffset + got);
                if (n <= 0) throw new EndOfStreamException($"Truncated data for '{name}'.");
                got += n;
            }
        }
        return new ReferenceTensor((int[])e.Shape.Clone(), Decode(bytes, e.DType));
    }

    /// <summary>Decodes little-endian raw bytes of the given dtype.</summary>
    public static double[] Decode(ReadOnlySpan<byte> bytes, string dtype)
    {
        int size = ElementSize(dtype);
        if (size == 0) throw new NotSupportedException($"dtype {dtype}");
        var result = new double[bytes.Length / size];
        for (int i = 0; i < result.Length; i++)
        {
            var b = bytes.Slice(i * size, size);
            result[i] = dtype switch
            {
                "F64" => BinaryPrimitives.ReadDoubleLittleEndian(b),
                "F32" => BinaryPrimitives.ReadSingleLittleEndian(b),
                "BF16" => DecodeBF16(BinaryPrimitives.ReadUInt16LittleEndian(b)),
                _ => DecodeF16(BinaryPrimitives.ReadUInt16LittleEndian(b)),
            };
        }
        return result;
    }

    /// <summary>bfloat16 is the top half of an IEEE float32.</summary>
    public static double DecodeBF16(ushort bits) => BitConverter.Int32BitsToSingle(bits << 16);

    /// <summary>IEEE binary16 decoded by hand (1 sign, 5 exponent bits biased by 15, 10 mantissa bits).</summary>
    public static double DecodeF16(ushort bits)
    {
        double sign = (bits & 0x8000) != 0 ? -1.0 : 1.0;
        int exponent = (bits >> 10) & 0x1F;
        int mantissa = bits & 0x3FF;
        if (exponent == 0x1F)
            return mantissa == 0 ? sign * double.PositiveInfinity : double.NaN;
        if (exponent == 0)
            return sign * Math.ScaleB(mantissa, -24); // subnormal: mantissa * 2^-14 / 2^10 (also signed zero)
        return sign * Math.ScaleB(1024 + mantissa, exponent - 25); // (1 + m/1024) * 2^(e-15)
    }

    // IReadOnlyDictionary: indexing decodes on every access (no caching; the model keeps what it needs).
    public ReferenceTensor this[string key] => Read(key);
    public IEnumerable<string> Keys => _entries.Keys;
    public IEnumerable<ReferenceTensor> Values => _entries.Keys.Select(Read);
    public int Count => _entries.Count;
    public bool ContainsKey(string key) => _entries.ContainsKey(key);

    public bool TryGetValue(string key, [MaybeNullWhen(false)] out ReferenceTensor value)
    {
        if (!_entries.ContainsKey(key))
        {
            value = null;
            return false;
        }
        value = Read(key);
        return true;
    }

    public IEnumerator<KeyValuePair<string, ReferenceTensor>> GetEnumerator() =>
        _entries.Keys.Select(k => new KeyValuePair<string, ReferenceTensor>(k, Read(k))).GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();
}
