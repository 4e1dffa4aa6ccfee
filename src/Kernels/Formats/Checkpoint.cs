using System.Text.Json;
using MoeServer.Kernels.Formats.Gguf;

namespace MoeServer.Kernels.Formats;

/// <summary>
/// The tensors of an HF checkpoint directory: a single model.safetensors, or model.safetensors.index.json with shards.
/// Every file is memory-mapped once; lookups name the tensor and the file it should be in. A GGUF file (or the first
/// part of a split one) opens as the same thing: its tensors under their HF names (<see cref="GgufModel"/>).
/// </summary>
public sealed class Checkpoint : IDisposable
{
    public const string SingleFileName = "model.safetensors";
    public const string IndexFileName = "model.safetensors.index.json";

    private readonly Dictionary<string, SafetensorsFile> _files;
    private readonly Dictionary<string, (TensorEntry Entry, ITensorStore File)> _byName = new(StringComparer.Ordinal);
    private readonly List<ITensorStore> _extraStores = [];
    private readonly string _shapeSource = "config.json";

    public string Directory { get; }
    public IReadOnlyCollection<string> TensorNames => _byName.Keys;
    /// <summary>The safetensors files (none for a GGUF model).</summary>
    public IEnumerable<SafetensorsFile> Files => _files.Values;
    public long TotalBytes => _byName.Values.Sum(v => v.Entry.ByteLength);
    /// <summary>The GGUF model this checkpoint reads, or null for an HF directory.</summary>
    public GgufModel? Gguf { get; }

    private Checkpoint(string dir, Dictionary<string, SafetensorsFile> files)
    {
        Directory = dir;
        _files = files;
    }

    private Checkpoint(GgufModel gguf)
    {
        Directory = gguf.Path;
        _files = [];
        Gguf = gguf;
        _shapeSource = "the GGUF metadata";
        var views = gguf.Parts.ToDictionary(p => p.Path, p => (ITensorStore)new GgufViewStore(p));
        _extraStores.AddRange(views.Values);
        foreach (var (name, (entry, file, source, unpermute)) in gguf.Tensors)
        {
            ITensorStore store;
            if (unpermute)
            {
                var owner = gguf.Parts.First(p => p.Path == source.File);
                store = new UnpermutedRopeStore(owner, source, gguf.Config.HeadDim);
                _extraStores.Add(store);
            }
            else
            {
                store = views[file!.Path];
            }
            _byName[name] = (entry, store);
        }
    }

    /// <summary>Opens an HF checkpoint directory, or a GGUF file (<see cref="GgufModel.Open"/>).</summary>
    public static Checkpoint Open(string dir)
    {
        if (GgufModel.IsGgufPath(dir)) return new Checkpoint(GgufModel.Open(dir));
        string index = Path.Combine(dir, IndexFileName);
        string single = Path.Combine(dir, SingleFileName);
        if (File.Exists(index)) return OpenSharded(dir, index);
        if (File.Exists(single))
        {
            var f = SafetensorsFile.Open(single);
            var ck = new Checkpoint(dir, new() { [single] = f });
            foreach (var e in f.Tensors.Values) ck._byName[e.Name] = (e, f);
            return ck;
        }
        throw new CheckpointFormatException(dir, null, $"no {SingleFileName} or {IndexFileName} in the model directory");
    }

    /// <summary>
    /// The safetensors files of a checkpoint directory in ordinal name order, found as <see cref="Open"/> finds them
    /// but without opening or checking them (fingerprints, listings).
    /// </summary>
    public static IReadOnlyList<string> FilePaths(string dir)
    {
        if (GgufModel.IsGgufPath(dir)) return GgufModel.FilePaths(dir);
        string index = Path.Combine(dir, IndexFileName);
        string single = Path.Combine(dir, SingleFileName);
        if (File.Exists(index))
        {
            return ReadWeightMap(index)
                .Select(kv => ShardPath(dir, index, kv.Key, kv.Value))
                .Distinct(StringComparer.Ordinal)
                .Order(StringComparer.Ordinal) // one directory: path order is file-name order
                .ToList();
        }
        if (File.Exists(single)) return [single];
        throw new CheckpointFormatException(dir, null, $"no {SingleFileName} or {IndexFileName} in the model directory");
    }

    private static string ShardPath(string dir, string indexPath, string tensor, string fileName)
    {
        if (fileName.Length == 0 || fileName.Contains('/') || fileName.Contains('\\'))
            throw new CheckpointFormatException(indexPath, tensor, $"bad shard file name '{fileName}'");
        return Path.Combine(dir, fileName);
    }

    private static Dictionary<string, string> ReadWeightMap(string indexPath)
    {
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(indexPath));
            if (!doc.RootElement.TryGetProperty("weight_map", out var wm) || wm.ValueKind != JsonValueKind.Object)
                throw new CheckpointFormatException(indexPath, null, "no weight_map object");
            return wm.EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString() ?? "", StringComparer.Ordinal);
        }
        catch (JsonException e)
        {
            throw new CheckpointFormatException(indexPath, null, $"invalid JSON: {e.Message}", e);
        }
    }

    private static Checkpoint OpenSharded(string dir, string indexPath)
    {
        var weightMap = ReadWeightMap(indexPath);
        var files = new Dictionary<string, SafetensorsFile>();
        var ck = new Checkpoint(dir, files);
        try
        {
            foreach (var (tensor, fileName) in weightMap)
            {
                string path = ShardPath(dir, indexPath, tensor, fileName);
                if (!files.TryGetValue(path, out var f))
                {
                    if (!File.Exists(path))
                        throw new CheckpointFormatException(path, tensor, $"shard named by {IndexFileName} is missing");
                    f = SafetensorsFile.Open(path);
                    files[path] = f;
                }
                if (!f.Tensors.TryGetValue(tensor, out var entry))
                    throw new CheckpointFormatException(path, tensor, $"{IndexFileName} places the tensor in this shard but the shard does not contain it");
                ck._byName[tensor] = (entry, f);
            }
        }
        catch
        {
            ck.Dispose();
            throw;
        }
        return ck;
    }

    public bool Contains(string name) => _byName.ContainsKey(name);

    public TensorEntry Entry(string name) => Lookup(name).Entry;

    /// <summary>Finds a tensor and checks its shape, naming file and tensor on any mismatch.</summary>
    public TensorEntry Require(string name, params long[] expectedShape)
    {
        var (entry, _) = Lookup(name);
        if (!entry.Shape.SequenceEqual(expectedShape))
            throw new CheckpointFormatException(entry.File, name,
                $"shape {entry.ShapeText} disagrees with {_shapeSource}, which implies [{string.Join(", ", expectedShape)}]");
        return entry;
    }

    public unsafe ReadOnlySpan<byte> GetBytes(TensorEntry entry) => new(GetPointer(entry), checked((int)entry.ByteLength));

    public unsafe byte* GetPointer(TensorEntry entry) => _byName[entry.Name].File.GetPointer(entry);

    /// <summary>Drops the ranges from this process's mapping and the page cache (see
    /// <see cref="SafetensorsFile.DropFromPageCache"/>); false if any was refused.</summary>
    public bool DropFromPageCache(IEnumerable<CheckpointRange> ranges) =>
        ranges.Aggregate(true, (ok, r) => _byName[r.Entry.Name].File.DropFromPageCache(r.Entry, r.Offset, r.Length) && ok);

    /// <summary>Share of the ranges' pages in the page cache (weighted by pages), -1 where unsupported.</summary>
    public double CachedFraction(IReadOnlyCollection<CheckpointRange> ranges)
    {
        double cached = 0, total = 0;
        foreach (var r in ranges)
        {
            double f = _byName[r.Entry.Name].File.CachedFraction(r.Entry, r.Offset, r.Length);
            if (f < 0) return -1;
            cached += f * r.Length;
            total += r.Length;
        }
        return total == 0 ? 0 : cached / total;
    }

    private (TensorEntry Entry, ITensorStore File) Lookup(string name)
    {
        if (_byName.TryGetValue(name, out var v)) return v;
        string where = Gguf is not null ? Gguf.Path : _files.Count == 1 ? _files.Keys.First() : Path.Combine(Directory, IndexFileName);
        throw new CheckpointFormatException(where, name, "missing from the checkpoint");
    }

    public void Dispose()
    {
        foreach (var f in _files.Values) f.Dispose();
        _files.Clear();
        foreach (var s in _extraStores) s.Dispose();
        _extraStores.Clear();
        Gguf?.Dispose();
    }
}
