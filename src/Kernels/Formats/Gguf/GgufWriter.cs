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
            long expected = GgmlTypes.ByteLength((uint)t.Type, t.Ne[0], t.Elements)
                            ?? throw new ArgumentException($"tensor {t.Name}: {GgmlTypes.Name((uint)t.Type)} rows of {t.Ne[0]} elements are not whole blocks");
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

    /// <summary>
    /// Writes <paramref name="file"/> as <paramref name="parts"/> files the way llama.cpp's gguf-split does: tensors in
    /// order, spread evenly by bytes; the first part carries all metadata, every part <c>split.no</c> (u16),
    /// <c>split.count</c> (u16) and <c>split.tensors.count</c> (i32). Part paths are <c>NAME-0000k-of-0000N.gguf</c>
    /// next to <paramref name="path"/> (whose <c>.gguf</c> is dropped to make NAME).
    /// </summary>
    public static IReadOnlyList<string> WriteSplit(string path, GgufFile file, int parts)
    {
        if (parts < 1 || parts > file.Tensors.Count) throw new ArgumentOutOfRangeException(nameof(parts), parts, $"1..{file.Tensors.Count} parts");
        string stem = path.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase) ? path[..^5] : path;
        long total = file.Tensors.Sum(t => t.Data.LongLength), done = 0;
        var groups = Enumerable.Range(0, parts).Select(_ => new List<GgufTensor>()).ToArray();
        int g = 0;
        foreach (var t in file.Tensors)
        {
            // Move to the next part once this one holds its share of the bytes, keeping enough tensors for the rest.
            while (g < parts - 1 && groups[g].Count > 0 && done >= total * (g + 1) / parts) g++;
            int left = file.Tensors.Count - file.Tensors.IndexOf(t);
            if (g < parts - 1 && left <= parts - 1 - g && groups[g].Count > 0) g++;
            groups[g].Add(t);
            done += t.Data.LongLength;
        }
        var written = new List<string>();
        for (int i = 0; i < parts; i++)
        {
            var part = new GgufFile();
            if (i == 0) part.Metadata.AddRange(file.Metadata);
            else if (file.Get("general.alignment") is { } al) part.Set("general.alignment", al);
            part.Set("split.no", new GgufValue(GgufValueType.UInt16, (ushort)i));
            part.Set("split.count", new GgufValue(GgufValueType.UInt16, (ushort)parts));
            part.Set("split.tensors.count", GgufValue.Of(file.Tensors.Count));
            part.Tensors.AddRange(groups[i]);
            string p = $"{stem}-{i + 1:D5}-of-{parts:D5}.gguf";
            Write(p, part);
            written.Add(p);
        }
        return written;
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
