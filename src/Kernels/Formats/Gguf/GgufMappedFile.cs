using System.IO.MemoryMappedFiles;
using System.Text;

namespace MoeServer.Kernels.Formats.Gguf;

/// <summary>One tensor of a mapped GGUF file: ggml shape (<c>ne[0]</c> first), raw ggml type, absolute file offset.</summary>
public sealed record GgufTensorInfo(string Name, long[] Ne, uint RawType, long Offset, long ByteLength, string File)
{
    public long Elements => Ne.Aggregate(1L, (a, b) => a * b);
    /// <summary>The torch/HF shape: ggml's dimensions reversed.</summary>
    public long[] TorchShape => Ne.Reverse().ToArray();
    public string TypeName => GgmlTypes.Name(RawType);
}

/// <summary>ggml tensor type names and sizes (the numbering of ggml.h), so a file with any type can be listed and a
/// type we do not run named in the error.</summary>
public static class GgmlTypes
{
    private static readonly Dictionary<uint, (string Name, int BlockElements, int BlockBytes)> Known = new()
    {
        [0] = ("F32", 1, 4), [1] = ("F16", 1, 2), [2] = ("Q4_0", 32, 18), [3] = ("Q4_1", 32, 20),
        [6] = ("Q5_0", 32, 22), [7] = ("Q5_1", 32, 24), [8] = ("Q8_0", 32, 34), [9] = ("Q8_1", 32, 36),
        [10] = ("Q2_K", 256, 84), [11] = ("Q3_K", 256, 110), [12] = ("Q4_K", 256, 144), [13] = ("Q5_K", 256, 176),
        [14] = ("Q6_K", 256, 210), [15] = ("Q8_K", 256, 292), [16] = ("IQ2_XXS", 256, 66), [17] = ("IQ2_XS", 256, 74),
        [18] = ("IQ3_XXS", 256, 98), [19] = ("IQ1_S", 256, 50), [20] = ("IQ4_NL", 32, 18), [21] = ("IQ3_S", 256, 110),
        [22] = ("IQ2_S", 256, 82), [23] = ("IQ4_XS", 256, 136), [24] = ("I8", 1, 1), [25] = ("I16", 1, 2),
        [26] = ("I32", 1, 4), [27] = ("I64", 1, 8), [28] = ("F64", 1, 8), [29] = ("IQ1_M", 256, 56),
        [30] = ("BF16", 1, 2), [34] = ("TQ1_0", 256, 54), [35] = ("TQ2_0", 256, 66), [39] = ("MXFP4", 32, 17),
    };

    public static string Name(uint type) => Known.TryGetValue(type, out var k) ? k.Name : $"type {type}";

    /// <summary>Bytes of <paramref name="elements"/> elements of the type (whole blocks); null for an unknown type or a
    /// row that is not a whole number of blocks.</summary>
    public static long? ByteLength(uint type, long rowElements, long elements)
    {
        if (!Known.TryGetValue(type, out var k)) return null;
        if (rowElements % k.BlockElements != 0) return null;
        return elements / k.BlockElements * k.BlockBytes;
    }

    /// <summary>The runtime's element type for a ggml type, or null (quantized and integer types).</summary>
    public static TensorDType? ToDType(uint type) => type switch
    {
        0 => TensorDType.F32,
        1 => TensorDType.F16,
        30 => TensorDType.BF16,
        _ => null,
    };
}

/// <summary>
/// One memory-mapped GGUF v3 file: header, metadata and tensor infos parsed from the mapping with every read bounds
/// checked (a truncated or corrupt file fails at open naming the file and what is wrong), data offsets aligned by
/// <c>general.alignment</c>. Tensor bytes are read straight from the mapping.
/// </summary>
public sealed unsafe class GgufMappedFile : IDisposable
{
    private readonly MemoryMappedFile _map;
    private readonly MemoryMappedViewAccessor _view;
    private readonly byte* _base;
    private readonly Dictionary<string, GgufValue> _metadata = new(StringComparer.Ordinal);
    private readonly List<string> _metadataOrder = [];
    private readonly Dictionary<string, GgufTensorInfo> _tensors = new(StringComparer.Ordinal);
    private Microsoft.Win32.SafeHandles.SafeFileHandle? _handle;
    private bool _disposed;

    public string Path { get; }
    public long Length { get; }
    public uint Version { get; }
    public int Alignment { get; }
    /// <summary>Absolute offset of the tensor data section.</summary>
    public long DataOffset { get; }
    /// <summary>Header bytes (magic through the padding before the data): what fingerprints hash.</summary>
    public ReadOnlySpan<byte> HeaderBytes => new(_base, checked((int)DataOffset));
    public IReadOnlyDictionary<string, GgufValue> Metadata => _metadata;
    public IReadOnlyList<string> MetadataKeys => _metadataOrder;
    public IReadOnlyDictionary<string, GgufTensorInfo> Tensors => _tensors;
    /// <summary>Tensor names in file order.</summary>
    public IReadOnlyList<string> TensorOrder { get; }

    private GgufMappedFile(string path)
    {
        Path = path;
        if (!File.Exists(path)) throw new CheckpointFormatException(path, null, "file not found");
        Length = new FileInfo(path).Length;
        if (Length < 24) throw new CheckpointFormatException(path, null, $"file is {Length} bytes, too short for a GGUF header (truncated?)");
        _map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        _view = _map.CreateViewAccessor(0, Length, MemoryMappedFileAccess.Read);
        byte* p = null;
        _view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
        _base = p + _view.PointerOffset;
        try
        {
            var r = new Cursor(_base, Length, path);
            if (r.U32() != GgufFile.Magic) throw new CheckpointFormatException(path, null, "not a GGUF file (bad magic)");
            Version = r.U32();
            if (Version is not (2 or 3)) throw new CheckpointFormatException(path, null, $"GGUF version {Version} (this reader knows 2 and 3)");
            ulong tensorCount = r.U64(), kvCount = r.U64();
            if (tensorCount > 10_000_000 || kvCount > 10_000_000)
                throw new CheckpointFormatException(path, null, $"implausible counts ({tensorCount} tensors, {kvCount} metadata keys): corrupt header");
            for (ulong i = 0; i < kvCount; i++)
            {
                string key = r.Str();
                var type = (GgufValueType)r.U32();
                _metadata[key] = r.Value(type, key);
                _metadataOrder.Add(key);
            }
            Alignment = 32;
            if (_metadata.TryGetValue("general.alignment", out var a))
            {
                long al = Convert.ToInt64(a.Value, System.Globalization.CultureInfo.InvariantCulture);
                if (al <= 0 || (al & (al - 1)) != 0 || al > 1 << 20)
                    throw new CheckpointFormatException(path, null, $"general.alignment {al} is not a power of two");
                Alignment = (int)al;
            }
            var infos = new List<(string Name, long[] Ne, uint Type, ulong Offset)>();
            for (ulong i = 0; i < tensorCount; i++)
            {
                string name = r.Str();
                uint dims = r.U32();
                if (dims is 0 or > 4) throw new CheckpointFormatException(path, name, $"{dims} dimensions (1..4 allowed): corrupt header");
                var ne = new long[dims];
                for (int d = 0; d < dims; d++)
                {
                    ulong v = r.U64();
                    if (v > 1UL << 40) throw new CheckpointFormatException(path, name, $"dimension {v}: corrupt header");
                    ne[d] = (long)v;
                }
                infos.Add((name, ne, r.U32(), r.U64()));
            }
            DataOffset = (r.Position + Alignment - 1) / Alignment * Alignment;
            if (DataOffset > Length && infos.Count > 0)
                throw new CheckpointFormatException(path, null, $"the tensor data would start at byte {DataOffset} but the file has {Length} (truncated?)");
            var order = new List<string>(infos.Count);
            foreach (var (name, ne, type, offset) in infos)
            {
                long elements = ne.Aggregate(1L, (x, y) => x * y);
                long bytes = GgmlTypes.ByteLength(type, ne[0], elements)
                             ?? throw new CheckpointFormatException(path, name, $"{GgmlTypes.Name(type)}[{string.Join(", ", ne.Reverse())}]: unknown ggml type or a row that is not whole blocks");
                if (offset % (ulong)Alignment != 0)
                    throw new CheckpointFormatException(path, name, $"data offset {offset} is not {Alignment}-aligned");
                long at = DataOffset + (long)offset;
                if (offset > (ulong)Length || at + bytes > Length)
                    throw new CheckpointFormatException(path, name,
                        $"{GgmlTypes.Name(type)}[{string.Join(", ", ne.Reverse())}] ends at byte {at + bytes} but the file has {Length} bytes (truncated?)");
                if (!_tensors.TryAdd(name, new GgufTensorInfo(name, ne, type, at, bytes, path)))
                    throw new CheckpointFormatException(path, name, "appears twice in the file");
                order.Add(name);
            }
            TensorOrder = order;
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public static GgufMappedFile Open(string path) => CheckpointFormatException.Opening(path, () => new GgufMappedFile(path));

    /// <summary>Whether the file starts with the GGUF magic (false for a missing or short file).</summary>
    public static bool HasMagic(string path)
    {
        try
        {
            using var fs = File.OpenRead(path);
            Span<byte> b = stackalloc byte[4];
            return fs.Read(b) == 4 && BitConverter.ToUInt32(b) == GgufFile.Magic;
        }
        catch (IOException)
        {
            return false;
        }
    }

    public GgufValue? Get(string key) => _metadata.GetValueOrDefault(key);

    public byte* GetPointer(long offset)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return _base + offset;
    }

    /// <summary>Drops bytes [offset, offset+length) from this process's mapping and the page cache (as
    /// <see cref="SafetensorsFile.DropFromPageCache"/> does), widened to 2 MiB folios; false where refused.</summary>
    public bool DropFromPageCache(long offset, long length)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var (start, bytes) = PageSpan(offset, length, 2L << 20);
        if (!Native.LibC.TryMadvise(_base + start, (nuint)bytes, Native.LibC.MadvDontNeed)) return false;
        _handle ??= File.OpenHandle(Path, FileMode.Open, FileAccess.Read, FileShare.Read);
        Native.LibC.TryFdatasync(_handle);
        Native.LibC.TryFadviseDontNeed(_handle, start, bytes);
        return Native.LibC.TryFadviseDontNeed(_handle, start, bytes);
    }

    /// <summary>Share of the range's pages in the page cache now (-1 where unsupported), through a mapping of its own.</summary>
    public double CachedFraction(long offset, long length)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var (start, bytes) = PageSpan(offset, length, Environment.SystemPageSize);
        using var map = MemoryMappedFile.CreateFromFile(Path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        using var view = map.CreateViewAccessor(0, Length, MemoryMappedFileAccess.Read);
        byte* p = null;
        view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
        try
        {
            return Native.LibC.CachedFraction(p + view.PointerOffset + start, bytes);
        }
        finally
        {
            view.SafeMemoryMappedViewHandle.ReleasePointer();
        }
    }

    private (long Start, long Bytes) PageSpan(long from, long length, long align)
    {
        long to = from + length;
        long start = from / align * align;
        long end = Math.Min(Length, (to + align - 1) / align * align);
        return (start, end - start);
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _handle?.Dispose();
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _map.Dispose();
    }

    /// <summary>Bounds-checked little-endian reads from the mapping.</summary>
    private sealed class Cursor(byte* b, long length, string path)
    {
        public long Position { get; private set; }

        private byte* Take(long n, string what)
        {
            if (n < 0 || Position + n > length)
                throw new CheckpointFormatException(path, null, $"the file ends inside its header while reading {what} at byte {Position} (truncated?)");
            byte* p = b + Position;
            Position += n;
            return p;
        }

        public uint U32() => *(uint*)Take(4, "a 32-bit field");
        public ulong U64() => *(ulong*)Take(8, "a 64-bit field");

        public string Str()
        {
            ulong n = U64();
            if (n > 1 << 26) throw new CheckpointFormatException(path, null, $"a string of {n} bytes at byte {Position - 8}: corrupt header");
            try
            {
                return GgufFile.Utf8.GetString(new ReadOnlySpan<byte>(Take((long)n, "a string"), (int)n));
            }
            catch (DecoderFallbackException)
            {
                throw new CheckpointFormatException(path, null, $"a string at byte {Position - (long)n} is not valid UTF-8");
            }
        }

        private object Scalar(GgufValueType t, string key) => t switch
        {
            GgufValueType.UInt8 => *Take(1, key),
            GgufValueType.Int8 => *(sbyte*)Take(1, key),
            GgufValueType.UInt16 => *(ushort*)Take(2, key),
            GgufValueType.Int16 => *(short*)Take(2, key),
            GgufValueType.UInt32 => *(uint*)Take(4, key),
            GgufValueType.Int32 => *(int*)Take(4, key),
            GgufValueType.Float32 => *(float*)Take(4, key),
            GgufValueType.Bool => *Take(1, key) != 0,
            GgufValueType.String => Str(),
            GgufValueType.UInt64 => *(ulong*)Take(8, key),
            GgufValueType.Int64 => *(long*)Take(8, key),
            GgufValueType.Float64 => *(double*)Take(8, key),
            _ => throw new CheckpointFormatException(path, null, $"metadata {key} has unknown value type {(uint)t}: corrupt header"),
        };

        public GgufValue Value(GgufValueType type, string key)
        {
            if (type != GgufValueType.Array) return new GgufValue(type, Scalar(type, key));
            var element = (GgufValueType)U32();
            ulong count = U64();
            if (count > 1 << 26) throw new CheckpointFormatException(path, null, $"metadata {key} is an array of {count}: corrupt header");
            int n = (int)count;
            object array = element switch
            {
                GgufValueType.String => Fill<string>(n, () => Str()),
                GgufValueType.Int32 => Fill(n, () => (int)Scalar(element, key)),
                GgufValueType.UInt32 => Fill(n, () => (uint)Scalar(element, key)),
                GgufValueType.Float32 => Fill(n, () => (float)Scalar(element, key)),
                GgufValueType.Array => throw new CheckpointFormatException(path, null, $"metadata {key}: nested arrays are not supported"),
                _ => Fill(n, () => Scalar(element, key)),
            };
            return new GgufValue(GgufValueType.Array, array, element);
        }

        private static T[] Fill<T>(int n, Func<T> read)
        {
            var a = new T[n];
            for (int i = 0; i < n; i++) a[i] = read();
            return a;
        }
    }

    public override string ToString() => $"{Path} ({_tensors.Count} tensors)";
}
