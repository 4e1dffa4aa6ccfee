namespace MoeServer.Kernels.Formats.Gguf;

/// <summary>
/// Reads a GGUF v3 file back (metadata and every tensor's bytes): used to check what <see cref="GgufWriter"/> and the
/// exporter produce. A truncated or malformed file fails with a message naming the file and the part that is wrong.
/// </summary>
public static class GgufReader
{
    public static GgufFile Read(string path)
    {
        using var fs = File.OpenRead(path);
        using var r = new BinaryReader(fs, GgufFile.Utf8);
        try
        {
            if (r.ReadUInt32() != GgufFile.Magic) throw new InvalidDataException($"{path}: not a GGUF file (bad magic)");
            uint version = r.ReadUInt32();
            if (version != GgufFile.Version) throw new InvalidDataException($"{path}: GGUF version {version} (this reader knows 3)");
            ulong tensors = r.ReadUInt64(), kvs = r.ReadUInt64();
            if (tensors > 1_000_000 || kvs > 1_000_000) throw new InvalidDataException($"{path}: implausible counts ({tensors} tensors, {kvs} metadata keys)");
            var file = new GgufFile();
            for (ulong i = 0; i < kvs; i++)
            {
                string key = ReadString(r, path);
                var type = (GgufValueType)r.ReadUInt32();
                file.Metadata.Add(new(key, ReadValue(r, type, path, key)));
            }
            int alignment = file.Get("general.alignment") is { } a ? (int)a.AsUInt32() : GgufFile.DefaultAlignment;
            var infos = new List<(string Name, long[] Ne, GgmlType Type, ulong Offset)>();
            for (ulong i = 0; i < tensors; i++)
            {
                string name = ReadString(r, path);
                uint dims = r.ReadUInt32();
                if (dims is 0 or > 4) throw new InvalidDataException($"{path}: tensor {name} has {dims} dimensions");
                var ne = new long[dims];
                for (int d = 0; d < dims; d++) ne[d] = checked((long)r.ReadUInt64());
                infos.Add((name, ne, (GgmlType)r.ReadUInt32(), r.ReadUInt64()));
            }
            long dataStart = (fs.Position + alignment - 1) / alignment * alignment;
            foreach (var (name, ne, type, offset) in infos)
            {
                long bytes = ne.Aggregate(1L, (x, y) => x * y) * GgufTensor.ElementSize(type);
                if (offset % (ulong)alignment != 0) throw new InvalidDataException($"{path}: tensor {name} at offset {offset} is not {alignment}-aligned");
                long at = dataStart + (long)offset;
                if (at + bytes > fs.Length) throw new InvalidDataException($"{path}: tensor {name} ends at byte {at + bytes} but the file has {fs.Length} (truncated?)");
                fs.Position = at;
                var data = r.ReadBytes(checked((int)bytes));
                file.Tensors.Add(new GgufTensor(name, ne, type, data));
            }
            return file;
        }
        catch (EndOfStreamException)
        {
            throw new InvalidDataException($"{path}: the file ends inside its header (truncated?)");
        }
    }

    private static string ReadString(BinaryReader r, string path)
    {
        ulong n = r.ReadUInt64();
        if (n > 1 << 24) throw new InvalidDataException($"{path}: a string of {n} bytes (corrupt header?)");
        return GgufFile.Utf8.GetString(r.ReadBytes((int)n));
    }

    private static GgufValue ReadValue(BinaryReader r, GgufValueType type, string path, string key)
    {
        object Scalar(GgufValueType t) => t switch
        {
            GgufValueType.UInt8 => r.ReadByte(),
            GgufValueType.Int8 => r.ReadSByte(),
            GgufValueType.UInt16 => r.ReadUInt16(),
            GgufValueType.Int16 => r.ReadInt16(),
            GgufValueType.UInt32 => r.ReadUInt32(),
            GgufValueType.Int32 => r.ReadInt32(),
            GgufValueType.Float32 => r.ReadSingle(),
            GgufValueType.Bool => r.ReadByte() != 0,
            GgufValueType.String => ReadString(r, path),
            GgufValueType.UInt64 => r.ReadUInt64(),
            GgufValueType.Int64 => r.ReadInt64(),
            GgufValueType.Float64 => r.ReadDouble(),
            _ => throw new InvalidDataException($"{path}: metadata {key} has unknown value type {t}"),
        };
        if (type != GgufValueType.Array) return new GgufValue(type, Scalar(type));
        var element = (GgufValueType)r.ReadUInt32();
        ulong count = r.ReadUInt64();
        if (count > 1 << 24) throw new InvalidDataException($"{path}: metadata {key} is an array of {count} (corrupt header?)");
        object array = element switch
        {
            GgufValueType.String => Enumerable.Range(0, (int)count).Select(_ => ReadString(r, path)).ToArray(),
            GgufValueType.Int32 => Enumerable.Range(0, (int)count).Select(_ => r.ReadInt32()).ToArray(),
            GgufValueType.Float32 => Enumerable.Range(0, (int)count).Select(_ => r.ReadSingle()).ToArray(),
            _ => Enumerable.Range(0, (int)count).Select(_ => Scalar(element)).ToArray(),
        };
        return new GgufValue(GgufValueType.Array, array, element);
    }
}
