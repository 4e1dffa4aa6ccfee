using System.Text;
using MoeServer.Kernels.Checkpoints;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Formats;
using MoeServer.Kernels.Model;
using MoeServer.Kernels.Tests.Support;

namespace MoeServer.Kernels.Tests.Formats;

public class SafetensorsTests
{
    private static TensorData F32(string name, long[] shape, params float[] values) =>
        new(name, TensorDType.F32, shape, FloatEncoding.Encode(values, TensorDType.F32));

    [Fact]
    public void Round_trip_keeps_names_shapes_dtypes_and_bytes()
    {
        using var dir = new TempDir();
        var a = F32("a", [2, 3], 1, 2, 3, 4, 5, 6);
        var b = new TensorData("b", TensorDType.BF16, [3], FloatEncoding.Encode([1.5f, -2f, 0.25f], TensorDType.BF16));
        var c = new TensorData("c", TensorDType.F16, [1, 2], FloatEncoding.Encode([0.5f, 65504f], TensorDType.F16));
        SafetensorsWriter.WriteFile(dir.File("x.safetensors"), [a, b, c]);
        using var f = SafetensorsFile.Open(dir.File("x.safetensors"));
        Assert.Equal(3, f.Tensors.Count);
        foreach (var t in new[] { a, b, c })
        {
            var e = f.Tensors[t.Name];
            Assert.Equal(t.DType, e.DType);
            Assert.Equal(t.Shape, e.Shape);
            Assert.Equal(t.Bytes, f.GetBytes(e).ToArray());
        }
        Assert.Equal("pt", f.Metadata["format"]);
    }

    [Fact]
    public void Data_is_aligned_to_eight_bytes()
    {
        using var dir = new TempDir();
        SafetensorsWriter.WriteFile(dir.File("x.safetensors"), [F32("odd_name_x", [1], 1)]);
        using var f = SafetensorsFile.Open(dir.File("x.safetensors"));
        Assert.Equal(0, f.Tensors["odd_name_x"].Offset % 8);
    }

    [Fact]
    public void Truncated_file_names_file_and_tensor()
    {
        using var dir = new TempDir();
        string path = dir.File("t.safetensors");
        SafetensorsWriter.WriteFile(path, [F32("first", [2], 1, 2), F32("last.weight", [4], 1, 2, 3, 4)]);
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..^5]);
        var e = Assert.Throws<CheckpointFormatException>(() => SafetensorsFile.Open(path));
        Assert.Contains(path, e.Message);
        Assert.Contains("last.weight", e.Message);
        Assert.Contains("truncated", e.Message);
    }

    [Fact]
    public void File_shorter_than_its_header_is_rejected()
    {
        using var dir = new TempDir();
        string path = dir.File("h.safetensors");
        SafetensorsWriter.WriteFile(path, [F32("w", [2], 1, 2)]);
        File.WriteAllBytes(path, File.ReadAllBytes(path)[..20]);
        var e = Assert.Throws<CheckpointFormatException>(() => SafetensorsFile.Open(path));
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void Bad_header_json_is_rejected_with_file_name()
    {
        using var dir = new TempDir();
        string path = dir.File("bad.safetensors");
        var json = Encoding.UTF8.GetBytes("{\"w\": {\"dtype\": \"F32\", \"shape\": [1], ");
        File.WriteAllBytes(path, [.. BitConverter.GetBytes((long)json.Length), .. json, 0, 0, 0, 0]);
        var e = Assert.Throws<CheckpointFormatException>(() => SafetensorsFile.Open(path));
        Assert.Contains(path, e.Message);
        Assert.Contains("JSON", e.Message);
    }

    [Fact]
    public void Absurd_header_length_is_rejected()
    {
        using var dir = new TempDir();
        string path = dir.File("len.safetensors");
        File.WriteAllBytes(path, [.. BitConverter.GetBytes(long.MaxValue), 1, 2, 3]);
        Assert.Throws<CheckpointFormatException>(() => SafetensorsFile.Open(path));
    }

    [Fact]
    public void Byte_count_that_disagrees_with_shape_names_tensor()
    {
        using var dir = new TempDir();
        string path = dir.File("s.safetensors");
        var json = Encoding.UTF8.GetBytes("{\"w.bias\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}");
        File.WriteAllBytes(path, [.. BitConverter.GetBytes((long)json.Length), .. json, .. new byte[8]]);
        var e = Assert.Throws<CheckpointFormatException>(() => SafetensorsFile.Open(path));
        Assert.Contains("w.bias", e.Message);
    }

    [Fact]
    public void Unsupported_dtype_is_named()
    {
        using var dir = new TempDir();
        string path = dir.File("d.safetensors");
        var json = Encoding.UTF8.GetBytes("{\"w\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}");
        File.WriteAllBytes(path, [.. BitConverter.GetBytes((long)json.Length), .. json, .. new byte[8]]);
        var e = Assert.Throws<CheckpointFormatException>(() => SafetensorsFile.Open(path));
        Assert.Contains("I64", e.Message);
        Assert.Contains("'w'", e.Message);
    }

    [Fact]
    public void Sharded_checkpoint_reads_every_tensor_from_its_shard()
    {
        using var dir = new TempDir();
        var tensors = Enumerable.Range(0, 10).Select(i => F32($"t{i}", [4], i, i + 1, i + 2, i + 3)).ToList();
        SafetensorsWriter.WriteSharded(dir.Path, tensors, 3);
        Assert.True(File.Exists(dir.File(Checkpoint.IndexFileName)));
        Assert.Equal(3, Directory.GetFiles(dir.Path, "model-*-of-00003.safetensors").Length);
        using var ck = Checkpoint.Open(dir.Path);
        Assert.Equal(3, ck.Files.Count());
        foreach (var t in tensors)
            Assert.Equal(t.Bytes, ck.GetBytes(ck.Entry(t.Name)).ToArray());
    }

    [Fact]
    public void Missing_shard_is_named()
    {
        using var dir = new TempDir();
        SafetensorsWriter.WriteSharded(dir.Path, Enumerable.Range(0, 4).Select(i => F32($"t{i}", [1], i)).ToList(), 2);
        File.Delete(dir.File("model-00002-of-00002.safetensors"));
        var e = Assert.Throws<CheckpointFormatException>(() => Checkpoint.Open(dir.Path));
        Assert.Contains("model-00002-of-00002.safetensors", e.Message);
    }

    [Fact]
    public void Missing_tensor_names_file_and_tensor()
    {
        using var dir = new TempDir();
        SafetensorsWriter.WriteFile(dir.File(Checkpoint.SingleFileName), [F32("a", [1], 1)]);
        using var ck = Checkpoint.Open(dir.Path);
        var e = Assert.Throws<CheckpointFormatException>(() => ck.Entry("model.norm.weight"));
        Assert.Contains("model.norm.weight", e.Message);
        Assert.Contains(Checkpoint.SingleFileName, e.Message);
    }

    [Fact]
    public void Empty_directory_says_what_is_missing()
    {
        using var dir = new TempDir();
        var e = Assert.Throws<CheckpointFormatException>(() => Checkpoint.Open(dir.Path));
        Assert.Contains("model.safetensors", e.Message);
    }

    [Fact]
    public void Shape_that_disagrees_with_config_names_file_and_tensor()
    {
        using var dir = new TempDir();
        var cfg = CheckpointPresets.Config(ModelArchitecture.Mixtral, CheckpointPreset.Tiny);
        CheckpointGenerator.WriteWeights(cfg, dir.Path, new GeneratorOptions());
        // Claim a wider expert FFN in config.json than the tensors have.
        File.WriteAllText(dir.File("config.json"), (cfg with { ExpertIntermediateSize = 100, DenseIntermediateSize = 100 }).ToJson());
        var e = Assert.Throws<CheckpointFormatException>(() => ModelWeights.Load(dir.Path, WeightPrecision.F32));
        Assert.Contains("model.layers.0.block_sparse_moe.experts.0.w1.weight", e.Message);
        Assert.Contains("[96, 64]", e.Message);
        Assert.Contains(Checkpoint.SingleFileName, e.Message);
    }

    [Fact]
    public void Checkpoint_missing_a_layer_tensor_fails_load_naming_it()
    {
        using var dir = new TempDir();
        var cfg = CheckpointPresets.Config(ModelArchitecture.Olmoe, CheckpointPreset.Tiny);
        CheckpointGenerator.WriteWeights(cfg, dir.Path, new GeneratorOptions());
        File.WriteAllText(dir.File("config.json"), (cfg with { NumLayers = 3 }).ToJson());
        var e = Assert.Throws<CheckpointFormatException>(() => ModelWeights.Load(dir.Path, WeightPrecision.BF16));
        Assert.Contains("model.layers.2.", e.Message);
    }
}
