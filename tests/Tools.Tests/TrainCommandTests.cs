using System.Globalization;

namespace MoeServer.Tools.Tests;

/// <summary>moe-tools train as a user runs it: a tiny model on the committed held-out text.</summary>
public sealed class TrainCommandTests
{
    private static string HeldOut()
    {
        var d = new DirectoryInfo(AppContext.BaseDirectory);
        while (d is not null && !File.Exists(Path.Combine(d.FullName, "Server.sln"))) d = d.Parent;
        return Path.Combine(d!.FullName, "models", "corpus", "heldout-subset.txt");
    }

    private static string[] TrainArgs(TempDir dir, string outName, params string[] extra) =>
    [
        "train", "--train", HeldOut(), "--tokenizer", dir.Sub("tok"), "--out", dir.Sub(outName), "--steps", "12",
        "--batch", "4", "--seq", "32", "--warmup", "3", "--checkpoint-every", "4", "--layers", "2", "--hidden", "32",
        "--heads", "2", "--kv-heads", "1", "--experts", "4", "--top-k", "2", "--expert-size", "64", "--seed", "9", .. extra,
    ];

    private static double Loss(string stdout) =>
        double.Parse(stdout.Split(' ')[3], CultureInfo.InvariantCulture);

    [Fact]
    public void A_run_stopped_and_resumed_ends_where_an_uninterrupted_run_ends_and_its_checkpoint_serves()
    {
        using var dir = new TempDir();
        var tok = ToolRunner.Run("train-tokenizer", "--corpus", HeldOut(), "--out", dir.Sub("tok"), "--vocab", "512");
        Assert.True(tok.ExitCode == 0, tok.Stderr);

        var straight = ToolRunner.Run(TrainArgs(dir, "straight"));
        Assert.True(straight.ExitCode == 0, straight.Stderr);
        Assert.StartsWith("steps 12 loss ", straight.Stdout, StringComparison.Ordinal);

        var first = ToolRunner.Run(TrainArgs(dir, "pieces", "--stop-after", "8"));
        Assert.True(first.ExitCode == 0, first.Stderr);
        Assert.Contains("stopped after step 8 of 12", first.Stderr, StringComparison.Ordinal);
        Assert.False(File.Exists(Path.Combine(dir.Sub("pieces"), "config.json")), "a stopped run must not export yet");
        var rest = ToolRunner.Run(TrainArgs(dir, "pieces", "--resume"));
        Assert.True(rest.ExitCode == 0, rest.Stderr);
        Assert.Contains("resumed at step 8", rest.Stderr, StringComparison.Ordinal);
        Assert.Equal(Loss(straight.Stdout), Loss(rest.Stdout), 3);

        // The exported checkpoint is one the server's runtime loads and generates from.
        var gen = ToolRunner.Run("generate", "--model", dir.Sub("pieces"), "--prompt", "And God said", "--max-tokens", "5", "--temperature", "0");
        Assert.True(gen.ExitCode == 0, gen.Stderr);
    }

    [Fact]
    public void A_router_decoupled_model_trains_and_its_checkpoint_serves()
    {
        using var dir = new TempDir();
        var tok = ToolRunner.Run("train-tokenizer", "--corpus", HeldOut(), "--out", dir.Sub("tok"), "--vocab", "512");
        Assert.True(tok.ExitCode == 0, tok.Stderr);
        var run = ToolRunner.Run([.. TrainArgs(dir, "readme", "--arch", "readme_moe", "--router-hidden", "16", "--router-layers", "1",
            "--router-heads", "2", "--router-kv-heads", "1", "--router-mlp", "32", "--shared-expert", "32", "--top-k", "1",
            "--held-out", HeldOut(), "--eval-windows", "4")]);
        Assert.True(run.ExitCode == 0, run.Stderr);
        Assert.Contains("held-out perplexity", run.Stderr, StringComparison.Ordinal);
        string config = File.ReadAllText(Path.Combine(dir.Sub("readme"), "config.json"));
        Assert.Contains("\"readme_moe\"", config, StringComparison.Ordinal);
        var gen = ToolRunner.Run("generate", "--model", dir.Sub("readme"), "--prompt", "In the beginning", "--max-tokens", "5", "--temperature", "0");
        Assert.True(gen.ExitCode == 0, gen.Stderr);

        // Its model card: perplexity as served, every scored token routed to top-1 in every layer, samples measured.
        var card = ToolRunner.Run("model-card", "--model", dir.Sub("readme"), "--held-out", HeldOut(), "--vocab-text", HeldOut(),
            "--window", "32", "--training", "12 steps");
        Assert.True(card.ExitCode == 0, card.Stderr);
        using var json = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.Sub("readme"), "model-card.json")));
        var root = json.RootElement;
        double ppl = root.GetProperty("held_out_perplexity").GetDouble();
        Assert.InRange(ppl, 1.0, 512.0);
        long scored = root.GetProperty("scored_tokens").GetInt64();
        foreach (var layer in root.GetProperty("expert_tokens").EnumerateArray())
            Assert.Equal(scored, layer.EnumerateArray().Sum(e => e.GetInt64()));
        Assert.InRange(root.GetProperty("vocabulary_coverage").GetDouble(), 0.0, 1.0);
        string markdown = File.ReadAllText(Path.Combine(dir.Sub("readme"), "MODEL_CARD.md"));
        Assert.Contains("keeps previous token's top expert", markdown, StringComparison.Ordinal);
        Assert.Contains(ppl.ToString("F3", CultureInfo.InvariantCulture), markdown, StringComparison.Ordinal);
    }
}
