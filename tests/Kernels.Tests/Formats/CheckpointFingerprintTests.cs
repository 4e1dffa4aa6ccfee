using System.Text;
using MoeServer.Kernels.Checkpoints;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Formats;
using MoeServer.Kernels.Tests.Support;

namespace MoeServer.Kernels.Tests.Formats;

public class CheckpointFingerprintTests
{
    private static string Write(string dir, long seed = 1, int shards = 1)
    {
        var cfg = CheckpointPresets.Config(ModelArchitecture.Olmoe, CheckpointPreset.Tiny);
        CheckpointGenerator.WriteWeights(cfg, dir, new GeneratorOptions { Seed = seed, Shards = shards });
        return dir;
    }

    private static void CopyDir(string from, string to)
    {
        foreach (string f in Directory.GetFiles(from))
            File.Copy(f, Path.Combine(to, Path.GetFileName(f)));
    }

    private static string AnyShard(string dir) => Checkpoint.FilePaths(dir)[^1];

    [Fact]
    public void Fingerprint_is_32_lowercase_hex_characters()
    {
        using var dir = new TempDir();
        Assert.Matches("^[0-9a-f]{32}$", CheckpointFingerprint.Compute(Write(dir.Path)));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    public void Same_checkpoint_in_another_directory_has_the_same_fingerprint(int shards)
    {
        using var a = new TempDir();
        using var b = new TempDir();
        Write(a.Path, shards: shards);
        CopyDir(a.Path, b.Path);
        Assert.Equal(CheckpointFingerprint.Compute(a.Path), CheckpointFingerprint.Compute(b.Path));
    }

    /// <summary>Same names, shapes and offsets, so identical headers: only the sampled data tells them apart.</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    public void Checkpoint_written_with_another_seed_has_a_different_fingerprint(int shards)
    {
        using var a = new TempDir();
        using var b = new TempDir();
        Write(a.Path, seed: 1, shards: shards);
        Write(b.Path, seed: 2, shards: shards);
        Assert.Equal(File.ReadAllBytes(Path.Combine(a.Path, "config.json")), File.ReadAllBytes(Path.Combine(b.Path, "config.json")));
        Assert.NotEqual(CheckpointFingerprint.Compute(a.Path), CheckpointFingerprint.Compute(b.Path));
    }

    [Fact]
    public void One_changed_byte_of_config_json_changes_the_fingerprint()
    {
        using var a = new TempDir();
        using var b = new TempDir();
        Write(a.Path);
        CopyDir(a.Path, b.Path);
        string config = Path.Combine(b.Path, "config.json");
        var bytes = File.ReadAllBytes(config);
        int i = Array.IndexOf(bytes, (byte)'6'); // hidden_size 64 -> 65 (or any other '6'): one byte
        Assert.True(i >= 0);
        bytes[i] = (byte)'5';
        File.WriteAllBytes(config, bytes);
        Assert.NotEqual(CheckpointFingerprint.Compute(a.Path), CheckpointFingerprint.Compute(b.Path));
    }

    [Theory]
    [InlineData(1, -1)]
    [InlineData(1, 8)]
    [InlineData(3, -4096)]
    [InlineData(3, 1)]
    public void Truncated_or_grown_safetensors_file_changes_the_fingerprint(int shards, int delta)
    {
        using var a = new TempDir();
        using var b = new TempDir();
        Write(a.Path, shards: shards);
        CopyDir(a.Path, b.Path);
        using (var fs = new FileStream(AnyShard(b.Path), FileMode.Open, FileAccess.ReadWrite))
            fs.SetLength(fs.Length + delta);
        Assert.NotEqual(CheckpointFingerprint.Compute(a.Path), CheckpointFingerprint.Compute(b.Path));
    }

    [Fact]
    public void Renamed_tensor_in_a_header_changes_the_fingerprint()
    {
        using var a = new TempDir();
        using var b = new TempDir();
        Write(a.Path, shards: 3);
        CopyDir(a.Path, b.Path);
        string shard = AnyShard(b.Path);
        var bytes = File.ReadAllBytes(shard);
        int header = (int)BitConverter.ToInt64(bytes, 0);
        int at = Encoding.UTF8.GetString(bytes, 8, header).IndexOf("model.layers", StringComparison.Ordinal);
        Assert.True(at >= 0);
        bytes[8 + at] = (byte)'M'; // same length, so offsets and file size stay put
        File.WriteAllBytes(shard, bytes);
        Assert.NotEqual(CheckpointFingerprint.Compute(a.Path), CheckpointFingerprint.Compute(b.Path));
    }

    [Fact]
    public void Directory_without_a_checkpoint_fails_saying_what_is_missing()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("config.json"), "{}");
        var e = Assert.Throws<CheckpointFormatException>(() => CheckpointFingerprint.Compute(dir.Path));
        Assert.Contains(Checkpoint.SingleFileName, e.Message);
    }

    [Fact]
    public void Shard_files_are_listed_in_name_order_once_each()
    {
        using var dir = new TempDir();
        Write(dir.Path, shards: 3);
        var files = Checkpoint.FilePaths(dir.Path).Select(Path.GetFileName).ToList();
        Assert.Equal(["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"], files);
    }
}
