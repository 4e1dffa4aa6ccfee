using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace MoeServer.Kernels.Formats;

/// <summary>A tensor to write: name, dtype and shape with its raw little-endian bytes.</summary>
public sealed record TensorData(string Name, TensorDType DType, long[] Shape, byte[] Bytes);

/// <summary>Writes safetensors files, single or sharded with model.safetensors.index.json, as HF does.</summary>
public static class SafetensorsWriter
{
    public static void WriteFile(string path, IReadOnlyList<TensorData> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var header = new JsonObject();
        var meta = new JsonObject { ["format"] = "pt" };
        if (metadata is not null)
            foreach (var (k, v) in metadata) meta[k] = v;
        header["__metadata__"] = meta;
        long offset = 0;
        foreach (var t in tensors)
        {
            long expected = t.Shape.Aggregate(1L, (a, b) => a * b) * t.DType.ElementSize();
            if (t.Bytes.LongLength != expected)
                throw new ArgumentException($"tensor '{t.Name}': {t.Bytes.LongLength} bytes for {t.DType}[{string.Join(",", t.Shape)}] (expected {expected})");
            header[t.Name] = new JsonObject
            {
                ["dtype"] = t.DType.ToSafetensorsName(),
                ["shape"] = new JsonArray(t.Shape.Select(s => (JsonNode)s).ToArray()),
                ["data_offsets"] = new JsonArray(offset, offset + t.Bytes.LongLength),
            };
            offset += t.Bytes.LongLength;
        }
        byte[] json = Encoding.UTF8.GetBytes(header.ToJsonString());
        // Pad the header with spaces to an 8-byte boundary so tensor data is aligned, as the reference writer does.
        int padded = (json.Length + 7) / 8 * 8;
        using var fs = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
        Span<byte> len = stackalloc byte[8];
        BitConverter.TryWriteBytes(len, (long)padded);
        fs.Write(len);
        fs.Write(json);
        for (int i = json.Length; i < padded; i++) fs.WriteByte((byte)' ');
        foreach (var t in tensors) fs.Write(t.Bytes);
    }

    /// <summary>Writes <paramref name="shards"/> files named like HF's (model-00001-of-00003.safetensors) plus the index.</summary>
    public static void WriteSharded(string dir, IReadOnlyList<TensorData> tensors, int shards)
    {
        if (shards <= 1)
        {
            WriteFile(Path.Combine(dir, Checkpoint.SingleFileName), tensors);
            return;
        }
        long total = tensors.Sum(t => t.Bytes.LongLength);
        long perShard = (total + shards - 1) / shards;
        var groups = new List<List<TensorData>> { new() };
        long acc = 0;
        foreach (var t in tensors)
        {
            if (acc >= perShard && groups.Count < shards)
            {
                groups.Add([]);
                acc = 0;
            }
            groups[^1].Add(t);
            acc += t.Bytes.LongLength;
        }
        while (groups.Count < shards) groups.Add([]);
        var weightMap = new JsonObject();
        for (int s = 0; s < groups.Count; s++)
        {
            string name = $"model-{s + 1:D5}-of-{groups.Count:D5}.safetensors";
            WriteFile(Path.Combine(dir, name), groups[s]);
            foreach (var t in groups[s]) weightMap[t.Name] = name;
        }
        var index = new JsonObject
        {
            ["metadata"] = new JsonObject { ["total_size"] = total },
            ["weight_map"] = weightMap,
        };
        File.WriteAllText(Path.Combine(dir, Checkpoint.IndexFileName), index.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }
}
