namespace MoeServer.Kernels.Formats.Gguf;

/// <summary>
/// Writes GGUF v3: header, metadata, tensor infos (names, ggml shapes, types, offsets), padding to the alignment,
/// then each tensor's bytes at its aligned offset. Tensor data is streamed, never concatenated in memory.
/// </summary>
public static class GgufWriter
{
    public static void Write(string path, GgufFile file)
    {
        int alignment = file.Get("general.alignment") is { } a ? (int)a.AsUInt32() : GgufFile.DefaultAlignment;
        using var fs = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
        using var w = new BinaryWriter(fs, GgufFile.Utf8, leaveOpen: true);
        w.Write(GgufFile.Magic);
        w.Write(GgufFile.Version);
        w.Write((ulong)file.Tensors.Count);
        w.Write((ulong)file.Metadata.Count);
        foreach (var (key, value) in file.Metadata)
        {
            WriteString(w, key);
            w.Write((uint)value.Type);
            WriteValue(w, value.Type, value.Value, value.ElementType, key);
        }
        ulong offset = 0;
        var offsets = new ulong[file.Tensors.Count];
        for (int i = 0; i < file.Tensors.Count; i++)
        {
            var t = file.Tensors[i];
            long expected = t.Elements * GgufTensor.ElementSize(t.Type);
            if (t.Data.LongLength != expected)
                throw new ArgumentException($"tensor {t.Name}: {t.Data.LongLength} bytes for shape [{string.Join(", ", t.Ne)}] of {t.Type} (expected {expected})");
            WriteString(w, t.Name);
            w.Write((uint)t.Ne.Length);
            foreach (long d in t.Ne) w.Write((ulong)d);
            w.Write((uint)t.Type);
            offsets[i] = offset;
            w.Write(offset);
            offset = Align(offset + (ulong)t.Data.LongLength, alignment);
        }
        w.Flush();
        Pad(fs, alignment);
        long dataStart = fs.Position;
        for (int i = 0; i < file.Tensors.Count; i++)
        {
            fs.Position = dataStart + (long)offsets[i];
            fs.Write(file.Tensors[i].Data);
        }
        Pad(fs, alignment);
    }

    private static ulong Align(ulong v, int alignment) => (v + (ulong)alignment - 1) / (ulong)alignment * (ulong)alignment;

    private static void Pad(Stream s, int alignment)
    {
        long pad = (alignment - s.Position % alignment) % alignment;
        for (long i = 0; i < pad; i++) s.WriteByte(0);
    }

    private static void WriteString(BinaryWriter w, string s)
    {
        var bytes = GgufFile.Utf8.GetBytes(s);
        w.Write((ulong)bytes.Length);
        w.Write(bytes);
    }

    private static void WriteValue(BinaryWriter w, GgufValueType type, object value, GgufValueType elementType, string key)
    {
        switch (type)
        {
            case GgufValueType.UInt8: w.Write(Convert.ToByte(value, System.Globalization.CultureInfo.InvariantCulture)); break;
            case GgufValueType.Int8: w.Write(Convert.ToSByte(value, System.Globalization.CultureInfo.InvariantCulture)); break;
            case GgufValueType.UInt16: w.Write(Convert.ToUInt16(value, System.Globalization.CultureInfo.InvariantCulture)); break;
            case GgufValueType.Int16: w.Write(Convert.ToInt16(value, System.Globalization.CultureInfo.InvariantCulture)); break;
            case GgufValueType.UInt32: w.Write(Convert.ToUInt32(value, System.Globalization.CultureInfo.InvariantCulture)); break;
            case GgufValueType.Int32: w.Write(Convert.ToInt32(value, System.Globalization.CultureInfo.InvariantCulture)); break;
            case GgufValueType.Float32: w.Write(Convert.ToSingle(value, System.Globalization.CultureInfo.InvariantCulture)); break;
            case GgufValueType.Bool: w.Write((bool)value ? (byte)1 : (byte)0); break;
            case GgufValueType.String: WriteString(w, (string)value); break;
            case GgufValueType.UInt64: w.Write(Convert.ToUInt64(value, System.Globalization.CultureInfo.InvariantCulture)); break;
            case GgufValueType.Int64: w.Write(Convert.ToInt64(value, System.Globalization.CultureInfo.InvariantCulture)); break;
            case GgufValueType.Float64: w.Write(Convert.ToDouble(value, System.Globalization.CultureInfo.InvariantCulture)); break;
            case GgufValueType.Array:
                if (elementType == GgufValueType.Array) throw new ArgumentException($"metadata {key}: nested arrays are not written");
                var items = ((System.Collections.IEnumerable)value).Cast<object>().ToList();
                w.Write((uint)elementType);
                w.Write((ulong)items.Count);
                foreach (var item in items) WriteValue(w, elementType, item, GgufValueType.UInt8, key);
                break;
            default:
                throw new ArgumentException($"metadata {key}: unknown value type {type}");
        }
    }
}
