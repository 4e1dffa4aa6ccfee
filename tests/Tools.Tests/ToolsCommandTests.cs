using System.Text.Json;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Formats;

namespace MoeServer.Tools.Tests;

public class ToolsCommandTests : IClassFixture<ToolsCommandTests.TinyModel>
{
    /// <summary>One tiny olmoe checkpoint made by the tool itself, shared by the tests of this class.</summary>
    public sealed class TinyModel : IDisposable
    {
        public TempDir Dir { get; } = new();
        public string Model => Dir.Sub("olmoe");

        public TinyModel()
        {
            var r = ToolRunner.Run("make-checkpoint", "--arch", "olmoe", "--preset", "tiny", "--seed", "5", "--out", Model);
            Assert.True(r.ExitCode == 0, r.Stderr);
        }

        public void Dispose() => Dir.Dispose();
    }

    private readonly TinyModel _tiny;

    public ToolsCommandTests(TinyModel tiny) => _tiny = tiny;

    [Fact]
    public void Make_checkpoint_writes_a_sharded_hf_directory_with_fused_experts()
    {
        using var dir = new TempDir();
        string outDir = dir.Sub("q3");
        var r = ToolRunner.Run("make-checkpoint", "--arch", "qwen3_moe", "--preset", "tiny", "--seed", "2",
            "--shards", "3", "--fused-experts", "--dtype", "f32", "--out", outDir);
        Assert.True(r.ExitCode == 0, r.Stderr);
        foreach (var f in new[] { "config.json", "tokenizer.json", "tokenizer_config.json", Checkpoint.IndexFileName })
            Assert.True(File.Exists(Path.Combine(outDir, f)), $"{f} missing");
        var cfg = ModelConfig.Load(outDir);
        Assert.Equal(ModelArchitecture.Qwen3Moe, cfg.Architecture);
        using var ck = Checkpoint.Open(outDir);
        Assert.Equal(3, ck.Files.Count());
        Assert.Equal(TensorDType.F32, ck.Entry("model.layers.0.mlp.experts.gate_up_proj").DType);
        using var tc = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "tokenizer_config.json")));
        Assert.Contains("<|im_start|>", tc.RootElement.GetProperty("chat_template").GetString());
    }

    [Fact]
    public void Generate_prints_only_the_completion_and_a_seed_makes_it_repeatable()
    {
        string[] args = ["generate", "--model", _tiny.Model, "--prompt", "Hello there", "--max-tokens", "12", "--temperature", "1.0", "--seed", "11", "--precision", "f32"];
        var a = ToolRunner.Run(args);
        var b = ToolRunner.Run(args);
        Assert.True(a.ExitCode == 0, a.Stderr);
        Assert.Equal(a.Stdout, b.Stdout);
        Assert.DoesNotContain("loaded", a.Stdout);
        Assert.Contains("12 generated", a.Stderr);
        Assert.Contains("finish_reason=length", a.Stderr);
        var other = ToolRunner.Run([.. args[..^3], "--seed", "12", "--precision", "f32"]);
        Assert.NotEqual(a.Stdout, other.Stdout);
    }

    [Fact]
    public void Generate_with_chat_applies_the_checkpoint_template()
    {
        var r = ToolRunner.Run("generate", "--model", _tiny.Model, "--prompt", "Hi", "--max-tokens", "3", "--chat");
        Assert.True(r.ExitCode == 0, r.Stderr);
        // The ChatML wrapper adds the system message, role headers and the generation prompt to the 1-2 prompt tokens.
        var prompt = int.Parse(System.Text.RegularExpressions.Regex.Match(r.Stderr, @"\[(\d+) prompt tokens").Groups[1].Value);
        Assert.True(prompt > 10, r.Stderr);
    }

    [Fact]
    public void Train_tokenizer_learns_a_byte_level_bpe_that_round_trips_the_held_out_text()
    {
        using var dir = new TempDir();
        string heldOut = Path.Combine(RepoRoot(), "models", "corpus", "heldout-subset.txt");
        Assert.True(File.Exists(heldOut), $"{heldOut} is missing (the committed held-out subset)");
        var lines = File.ReadAllLines(heldOut);
        // Learn on the first half, check on the second: text the tokenizer never saw still round-trips.
        File.WriteAllLines(dir.Sub("corpus.txt"), lines[..(lines.Length / 2)]);
        var r = ToolRunner.Run("train-tokenizer", "--corpus", dir.Sub("corpus.txt"), "--out", dir.Sub("tok"), "--vocab", "1024");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Contains("1024 tokens", r.Stderr, StringComparison.Ordinal);

        var tok = Kernels.Tokenization.HfTokenizer.Load(dir.Sub("tok"));
        Assert.Equal(1024, tok.VocabSize);
        Assert.Equal("<|endoftext|>", tok.EosToken);
        Assert.NotNull(tok.TokenToId("<|im_start|>"));
        string unseen = string.Join("\n", lines[(lines.Length / 2)..]);
        var ids = tok.Encode(unseen);
        Assert.Equal(unseen, tok.Decode(ids));
        Assert.True(unseen.Length / (double)ids.Length > 2.0, $"only {unseen.Length / (double)ids.Length:F2} characters per token");
        var template = Kernels.Tokenization.ChatTemplate.Load(dir.Sub("tok"));
        Assert.Contains("<|im_start|>user", template.Render([new("user", "hi")], addGenerationPrompt: true), StringComparison.Ordinal);
    }

    private static string RepoRoot()
    {
        var d = new DirectoryInfo(AppContext.BaseDirectory);
        while (d is not null && !File.Exists(Path.Combine(d.FullName, "Server.sln"))) d = d.Parent;
        return d?.FullName ?? throw new InvalidOperationException("repository root not found above " + AppContext.BaseDirectory);
    }

    [Fact]
    public void Perplexity_reports_the_llama_cpp_protocol()
    {
        using var dir = new TempDir();
        string text = dir.Sub("text.txt");
        File.WriteAllText(text, string.Concat(Enumerable.Repeat("The quick brown fox jumps over the lazy dog. ", 80)));
        var r = ToolRunner.Run("perplexity", "--model", _tiny.Model, "--file", text, "--ctx", "64");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Matches(@"perplexity: \d+\.\d+", r.Stdout);
        Assert.Contains("llama.cpp", r.Stdout);
        Assert.Contains("n_ctx=64", r.Stdout);
    }

    [Fact]
    public void Unknown_option_is_a_usage_error_naming_it()
    {
        var r = ToolRunner.Run("generate", "--model", _tiny.Model, "--prompt", "x", "--max-tokenz", "3");
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("--max-tokenz", r.Stderr);
    }

    [Fact]
    public void Truncated_checkpoint_is_a_clear_error_naming_file_and_tensor()
    {
        using var dir = new TempDir();
        string broken = dir.Sub("broken");
        Directory.CreateDirectory(broken);
        foreach (var f in Directory.GetFiles(_tiny.Model)) File.Copy(f, Path.Combine(broken, Path.GetFileName(f)));
        string st = Path.Combine(broken, Checkpoint.SingleFileName);
        var bytes = File.ReadAllBytes(st);
        File.WriteAllBytes(st, bytes[..(bytes.Length - 100)]);
        var r = ToolRunner.Run("generate", "--model", broken, "--prompt", "x", "--max-tokens", "2");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains(st, r.Stderr);
        Assert.Contains("lm_head.weight", r.Stderr);
        Assert.Contains("truncated", r.Stderr);
    }

    [Fact]
    public void Bad_sampling_value_names_the_field()
    {
        var r = ToolRunner.Run("generate", "--model", _tiny.Model, "--prompt", "x", "--top-p", "1.5");
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("--top-p", r.Stderr);
    }

    [Fact]
    public void Export_gguf_writes_a_file_llama_cpp_can_read_and_refuses_what_it_cannot_run()
    {
        using var dir = new TempDir();
        string model = dir.Sub("mixtral"), gguf = dir.Sub("mixtral.gguf");
        Assert.Equal(0, ToolRunner.Run("make-checkpoint", "--arch", "mixtral", "--preset", "tiny", "--seed", "3", "--out", model).ExitCode);
        var r = ToolRunner.Run("export-gguf", "--model", model, "--out", gguf, "--type", "bf16");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Contains("arch llama", r.Stdout);
        var file = MoeServer.Kernels.Formats.Gguf.GgufReader.Read(gguf);
        Assert.Equal("llama", file.Get("general.architecture")!.AsString());
        Assert.Contains(file.Tensors, t => t.Name == "blk.0.ffn_gate_exps.weight" && t.Type == MoeServer.Kernels.Formats.Gguf.GgmlType.BF16);

        // The tiny olmoe preset uses grouped-query attention, which llama.cpp's olmoe does not have.
        var olmoe = ToolRunner.Run("export-gguf", "--model", _tiny.Model, "--out", dir.Sub("olmoe.gguf"));
        Assert.Equal(1, olmoe.ExitCode);
        Assert.Contains("grouped-query attention", olmoe.Stderr);
        var badType = ToolRunner.Run("export-gguf", "--model", model, "--out", gguf, "--type", "q4");
        Assert.Equal(2, badType.ExitCode);
        Assert.Contains("--type q4", badType.Stderr);
    }
}
