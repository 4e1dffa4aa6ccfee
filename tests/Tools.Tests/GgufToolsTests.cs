using MoeServer.Kernels.Formats.Gguf;

namespace MoeServer.Tools.Tests;

/// <summary>The tools on GGUF files the project makes: make-checkpoint -> export-gguf (stacked, per-expert, split,
/// f16) -> generate/perplexity on the .gguf give what the HF directory gives; a broken GGUF is exit code 1 naming it.</summary>
public class GgufToolsTests
{
    [Fact]
    public void Generate_and_perplexity_on_an_exported_gguf_match_the_hf_directory()
    {
        using var dir = new TempDir();
        string model = dir.Sub("mixtral");
        Assert.Equal(0, ToolRunner.Run("make-checkpoint", "--arch", "mixtral", "--preset", "tiny", "--seed", "4", "--dtype", "f32", "--out", model).ExitCode);
        string[] gen = ["--prompt", "Hello there", "--max-tokens", "10", "--temperature", "0", "--precision", "f32"];
        var want = ToolRunner.Run(["generate", "--model", model, .. gen]);
        Assert.True(want.ExitCode == 0, want.Stderr);
        string text = dir.Sub("text.txt");
        File.WriteAllText(text, string.Concat(Enumerable.Repeat("The quick brown fox jumps over the lazy dog. ", 60)));
        var ppl = ToolRunner.Run("perplexity", "--model", model, "--file", text, "--ctx", "64", "--precision", "f32");
        Assert.True(ppl.ExitCode == 0, ppl.Stderr);
        foreach (var (name, extra) in new (string, string[])[] { ("stacked", []), ("per-expert", ["--per-expert"]), ("split", ["--splits", "2"]) })
        {
            string gguf = dir.Sub($"m-{name}.gguf");
            var r = ToolRunner.Run(["export-gguf", "--model", model, "--out", gguf, "--type", "f32", .. extra]);
            Assert.True(r.ExitCode == 0, r.Stderr);
            string first = name == "split" ? dir.Sub($"m-{name}-00001-of-00002.gguf") : gguf;
            Assert.True(File.Exists(first), r.Stdout);
            var got = ToolRunner.Run(["generate", "--model", first, .. gen]);
            Assert.True(got.ExitCode == 0, got.Stderr);
            Assert.Equal(want.Stdout, got.Stdout);
            var p = ToolRunner.Run("perplexity", "--model", first, "--file", text, "--ctx", "64", "--precision", "f32");
            Assert.True(p.ExitCode == 0, p.Stderr);
            Assert.Equal(ppl.Stdout, p.Stdout);
        }
        var half = ToolRunner.Run("export-gguf", "--model", model, "--out", dir.Sub("m16.gguf"), "--type", "f16");
        Assert.True(half.ExitCode == 0, half.Stderr);
        Assert.Equal(1u, GgufReader.Read(dir.Sub("m16.gguf")).Get("general.file_type")!.AsUInt32());
    }

    [Fact]
    public void A_broken_gguf_is_exit_code_1_with_one_line_naming_the_file()
    {
        using var dir = new TempDir();
        string model = dir.Sub("q2"), gguf = dir.Sub("q2.gguf");
        Assert.Equal(0, ToolRunner.Run("make-checkpoint", "--arch", "qwen2_moe", "--preset", "tiny", "--seed", "4", "--out", model).ExitCode);
        Assert.Equal(0, ToolRunner.Run("export-gguf", "--model", model, "--out", gguf).ExitCode);
        var bytes = File.ReadAllBytes(gguf);
        File.WriteAllBytes(gguf, bytes[..(bytes.Length - 1000)]);
        foreach (var args in new[] { new[] { "generate", "--model", gguf, "--prompt", "x", "--max-tokens", "2" }, ["perplexity", "--model", gguf, "--file", gguf] })
        {
            var r = ToolRunner.Run(args);
            Assert.Equal(1, r.ExitCode);
            var line = r.Stderr.Split('\n').Single(l => l.StartsWith("error:", StringComparison.Ordinal));
            Assert.Contains(gguf, line);
            Assert.Contains("truncated", line);
        }
    }
}
