using System.Diagnostics;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Formats;
using MoeServer.Kernels.Model;
using TorchSharp;

namespace MoeServer.Actors.Experts;

/// <summary>
/// Where an expert node gets expert weights from: the memory-mapped checkpoint, read one expert at a time when
/// an entity starts (also after its shard moved here), then moved to this node's device.
/// </summary>
public sealed class ExpertWeightSource : IDisposable
{
    private readonly Lazy<Checkpoint> _checkpoint;
    private readonly torch.Device _device;

    public ExpertWeightSource(string modelDir, WeightPrecision precision, string device)
    {
        ModelDir = modelDir;
        Precision = precision;
        Config = ModelConfig.Load(modelDir);
        _device = ComputeDevice.Parse(device);
        _checkpoint = new Lazy<Checkpoint>(() => Checkpoint.Open(modelDir), LazyThreadSafetyMode.ExecutionAndPublication);
    }

    public string ModelDir { get; }
    public WeightPrecision Precision { get; }
    public ModelConfig Config { get; }

    /// <summary>Reads one expert's FFN; throws naming the file and tensor when the checkpoint is broken. With
    /// <paramref name="dropAfter"/> (the <c>disk</c> tier) the bytes it read are dropped from the page cache
    /// again, so its next load reads the disk.</summary>
    public (ExpertFfn Ffn, TimeSpan Took) Load(ExpertId id, bool dropAfter = false)
    {
        var sw = Stopwatch.StartNew();
        if (id.Layer < 0 || id.Layer >= Config.NumLayers || !Config.IsSparseLayer(id.Layer)
            || id.Expert < 0 || id.Expert >= Config.NumExperts)
            throw new ArgumentOutOfRangeException(nameof(id), $"expert {id} does not exist in {ModelDir} " +
                $"({Config.NumLayers} layers, {Config.NumExperts} experts)");
        var ranges = new List<CheckpointRange>();
        var ffn = ModelWeights.LoadExpert(Config, _checkpoint.Value, id.Layer, id.Expert, Precision, ranges);
        if (_device.type != DeviceType.CPU) ffn = ffn.To(_device);
        var took = sw.Elapsed;
        _ranges.TryAdd(id, ranges);
        if (dropAfter) _checkpoint.Value.DropFromPageCache(ranges);
        return (ffn, took);
    }

    private readonly System.Collections.Concurrent.ConcurrentDictionary<ExpertId, List<CheckpointRange>> _ranges = new();

    /// <summary>Drops an expert's checkpoint bytes from the page cache (it must have been loaded once); false when
    /// the OS refused or the expert was never read.</summary>
    public bool DropFromPageCache(ExpertId id) =>
        _ranges.TryGetValue(id, out var ranges) && _checkpoint.Value.DropFromPageCache(ranges);

    /// <summary>Share of an expert's checkpoint bytes in the page cache now (-1: unknown or unsupported).</summary>
    public double CachedFraction(ExpertId id) =>
        _ranges.TryGetValue(id, out var ranges) ? _checkpoint.Value.CachedFraction(ranges) : -1;

    public void Dispose()
    {
        if (_checkpoint.IsValueCreated) _checkpoint.Value.Dispose();
    }
}
