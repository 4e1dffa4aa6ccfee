using System.IO.MemoryMappedFiles;
using System.Text.Json;

namespace MoeServer.Kernels.Formats;

/// <summary>
/// One memory-mapped .safetensors file. The header is parsed and checked up front (offsets inside the file, byte
/// counts that match dtype x shape), so a truncated or corrupt file fails at open, naming the file and tensor.
/// Tensor bytes are read straight from the mapping: no intermediate managed copy.
/// </summary>
public sealed unsafe class SafetensorsFile : ITensorStore
{
    internal const long MaxHeaderBytes = 100L * 1024 * 1024;
    private readonly MemoryMappedFile? _map;
    private readonly MemoryMappedViewAccessor? _view;
    private readonly byte* _base;
    private readonly Dictionary<string, TensorEntry> _tensors = new(StringComparer.Ordinal);
    private bool _disposed;

    public string Path { get; }
    public long Length { get; }
    public IReadOnlyDictionary<string, TensorEntry> Tensors => _tensors;
    public IReadOnlyDictionary<string, string> Metadata { get; }

    private SafetensorsFile(string path)
    {
        Path = path;
        if (!File.Exists(path)) throw new CheckpointFormatException(path, null, "file not found");
        Length = new FileInfo(path).Length;
        if (Length < 8) throw new CheckpointFormatException(path, null, $"file is {Length} bytes, too short for a safetensors header (truncated?)");

        _map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        _view = _map.CreateViewAccessor(0, Length, MemoryMappedFileAccess.Read);
        byte* p = null;
        _view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
        _base = p + _view.PointerOffset;

        long headerLen = *(long*)_base;
        if (headerLen <= 0 || headerLen > MaxHeaderBytes)
            throw new CheckpointFormatException(path, null, $"bad header length {headerLen} (not a safetensors file?)");
        if (8 + headerLen > Length)
            throw new CheckpointFormatException(path, null, $"header says {headerLen} bytes but the file has only {Length - 8} after the length field (truncated?)");
        long dataStart = 8 + headerLen;
        var metadata = new Dictionary<string, string>();
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(new ReadOnlyMemory<byte>(new ReadOnlySpan<byte>(_base + 8, (int)headerLen).ToArray()));
        }
        catch (JsonException e)
        {
            throw new CheckpointFormatException(path, null, $"header is not valid JSON: {e.Message}", e);
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new CheckpointFormatException(path, null, "header is not a JSON object");
            foreach (var prop in doc.RootElement.EnumerateObject())
            {
                if (prop.Name == "__metadata__")
                {
                    if (prop.Value.ValueKind == JsonValueKind.Object)
                        foreach (var m in prop.Value.EnumerateObject())
                            metadata[m.Name] = m.Value.ValueKind == JsonValueKind.String ? m.Value.GetString()! : m.Value.GetRawText();
                    continue;
                }
                _tensors[prop.Name] = ParseEntry(path, prop.Name, prop.Value, dataStart, Length);
            }
        }
        Metadata = metadata;
    }

    public static SafetensorsFile Open(string path) => CheckpointFormatException.Opening(path, () => new SafetensorsFile(path));

    private static TensorEntry ParseEntry(string path, string name, JsonElement e, long dataStart, long fileLength)
    {
        if (e.ValueKind != JsonValueKind.Object)
            throw new CheckpointFormatException(path, name, "header entry is not an object");
        if (!e.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String)
            throw new CheckpointFormatException(path, name, "header entry has no dtype");
        string dtypeName = dt.GetString()!;
        if (!TensorDTypes.TryParse(dtypeName, out var dtype))
            throw new CheckpointFormatException(path, name, $"unsupported dtype {dtypeName} (supported: F32, BF16, F16)");
        if (!e.TryGetProperty("shape", out var sh) || sh.ValueKind != JsonValueKind.Array)
            throw new CheckpointFormatException(path, name, "header entry has no shape");
        var shape = new long[sh.GetArrayLength()];
        int i = 0;
        foreach (var d in sh.EnumerateArray())
        {
            if (!d.TryGetInt64(out long v) || v < 0)
                throw new CheckpointFormatException(path, name, $"bad dimension {d.GetRawText()} in shape");
            shape[i++] = v;
        }
        if (!e.TryGetProperty("data_offsets", out var off) || off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2
            || !off[0].TryGetInt64(out long begin) || !off[1].TryGetInt64(out long end) || begin < 0 || end < begin)
            throw new CheckpointFormatException(path, name, "header entry has bad data_offsets");
        long expected = shape.Aggregate(1L, (a, b) => a * b) * dtype.ElementSize();
        if (end - begin != expected)
            throw new CheckpointFormatException(path, name,
                $"data_offsets span {end - begin} bytes but {dtypeName}[{string.Join(", ", shape)}] needs {expected}");
        if (dataStart + end > fileLength)
            throw new CheckpointFormatException(path, name,
                $"data ends at byte {dataStart + end} but the file has {fileLength} bytes (truncated?)");
        return new TensorEntry(name, dtype, shape, dataStart + begin, end - begin, path);
    }

    /// <summary>The tensor's raw bytes inside the mapping (valid until Dispose).</summary>
    public ReadOnlySpan<byte> GetBytes(TensorEntry entry)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return new ReadOnlySpan<byte>(_base + entry.Offset, checked((int)entry.ByteLength));
    }

    /// <summary>Pointer to the tensor's bytes inside the mapping (valid until Dispose); for tensors over 2 GiB.</summary>
    public byte* GetPointer(TensorEntry entry)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return _base + entry.Offset;
    }

    /// <summary>
    /// Drops a byte range of a tensor from memory: this process's mapping of it (madvise DONTNEED) and then the
    /// kernel's page cache (posix_fadvise DONTNEED), so the next read of it comes from the disk. Whole pages around
    /// the range go. Returns false where the OS refuses or does not support it.
    /// </summary>
    public bool DropFromPageCache(TensorEntry entry, long offset, long length)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        // The page cache keeps files in folios of up to 2 MiB and drops only folios wholly inside the range: widen it
        // to 2 MiB boundaries (neighbouring experts' pages go too, which a disk tier wants anyway).
        var (start, bytes) = PageSpan(entry, offset, length, 2L << 20);
        if (!Native.LibC.TryMadvise(_base + start, (nuint)bytes, Native.LibC.MadvDontNeed)) return false;
        _handle ??= File.OpenHandle(Path, FileMode.Open, FileAccess.Read, FileShare.Read);
        // Dirty pages (a checkpoint written or checked out moments ago) are not dropped: write them out first.
        Native.LibC.TryFdatasync(_handle);
        Native.LibC.TryFadviseDontNeed(_handle, start, bytes);
        return Native.LibC.TryFadviseDontNeed(_handle, start, bytes);
    }

    /// <summary>Share of the range's pages in the page cache now, or -1 where unsupported. Measured through a mapping
    /// of its own (mincore on this file's long-lived mapping can report pages this process still holds).</summary>
    public double CachedFraction(TensorEntry entry, long offset, long length)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var (start, bytes) = PageSpan(entry, offset, length);
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

    private (long Start, long Bytes) PageSpan(TensorEntry entry, long offset, long length, long? alignment = null)
    {
        if (offset < 0 || length < 0 || offset + length > entry.ByteLength)
            throw new ArgumentOutOfRangeException(nameof(length), $"bytes {offset}..{offset + length} are outside {entry.Name} ({entry.ByteLength} bytes)");
        // File offsets, aligned in the file (folios are); the mapping starts at offset 0 on a page boundary, so they
        // are page-aligned addresses too.
        long align = alignment ?? Environment.SystemPageSize;
        long from = entry.Offset + offset, to = from + length;
        long start = from / align * align;
        long end = Math.Min(Length, (to + align - 1) / align * align);
        return (start, end - start);
    }

    private Microsoft.Win32.SafeHandles.SafeFileHandle? _handle;

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _handle?.Dispose();
        _view?.SafeMemoryMappedViewHandle.ReleasePointer();
        _view?.Dispose();
        _map?.Dispose();
    }

    public override string ToString() => $"{Path} ({_tensors.Count} tensors)";
}
