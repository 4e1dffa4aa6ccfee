using System.Globalization;
using System.Text;
using System.Text.Json;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Generation;
using MoeServer.Kernels.Model;
using MoeServer.Bench.Common;
using MoeServer.Kernels.Tokenization;

namespace MoeServer.Tools.ModelCards;

/// <summary>
/// model-card: measures a checkpoint with the serving runtime (bf16, as served) and writes MODEL_CARD.md and
/// model-card.json next to it: held-out perplexity (and that of the models it is compared with), expert usage per
/// layer, how often a token keeps the previous token's expert, and seeded samples with their quality checks.
/// </summary>
internal static class ModelCardCommand
{
    public const string JsonFileName = "model-card.json";
    public const string UsagePlotFileName = "expert-usage.png";
    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    public static int Run(string[] args)
    {
        var cl = new CommandLine(args, new HashSet<string>());
        string dir = cl.Required("model");
        string heldOut = cl.Required("held-out");
        string vocabText = cl.Required("vocab-text");
        string title = cl.String("title") ?? MoeServer.Kernels.Formats.ModelSourceInfo.DisplayName(dir);
        string training = cl.String("training") ?? "";
        string command = cl.String("command") ?? "";
        var compare = (cl.String("compare") ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries)
            .Select(c => c.Split('=', 2)).Select(p => p.Length == 2 ? (Name: p[0], Dir: p[1]) : throw new UsageException("--compare takes NAME=DIR,..."))
            .ToList();
        int window = cl.Int("window", 128);
        int trainerWindows = cl.Int("trainer-windows", 40);
        cl.RejectUnknown();

        // An HF directory gets its card inside; a GGUF file gets a NAME-card directory beside it.
        string outDir = MoeServer.Kernels.Formats.Gguf.GgufModel.IsGgufPath(dir)
            ? Path.Combine(Path.GetDirectoryName(Path.GetFullPath(dir))!, MoeServer.Kernels.Formats.ModelSourceInfo.DisplayName(dir) + "-card")
            : dir;
        Directory.CreateDirectory(outDir);
        var vocabulary = File.ReadLines(vocabText).SelectMany(ModelEvaluator.Words).ToHashSet();
        var tokenizer = ModelTokenizer.Load(dir);
        var progress = new ConsoleProgress("evaluate");
        ModelEvaluation eval;
        ModelConfig cfg;
        long parameters, active;
        using (var model = MoeModel.Load(dir, WeightPrecision.BF16))
        {
            cfg = model.Config;
            parameters = model.Weights.ParameterCount();
            active = ActiveParameters(model);
            eval = ModelEvaluator.Evaluate(model, tokenizer, heldOut, vocabulary, window, progress: (d, t) => progress.Report(d, t));
        }
        var others = new List<ComparedModel>();
        foreach (var (name, other) in compare)
        {
            if (Path.GetFullPath(other) == Path.GetFullPath(dir))
            {
                others.Add(new ComparedModel(name, Describe(cfg), parameters, active, eval.HeldOutPerplexity, eval.Perplexity.OfFirst(trainerWindows)));
                continue;
            }
            using var m = MoeModel.Load(other, WeightPrecision.BF16);
            var e = PerplexityEvaluator.EvaluateWindows(m, PerplexityEvaluator.LineDocuments(ModelTokenizer.Load(other), heldOut), window);
            others.Add(new ComparedModel(name, Describe(m.Config), m.Weights.ParameterCount(), ActiveParameters(m), e.Perplexity, e.OfFirst(trainerWindows)));
        }

        File.WriteAllText(Path.Combine(outDir, JsonFileName), JsonSerializer.Serialize(new
        {
            title,
            held_out_file = Path.GetFileName(heldOut),
            window,
            held_out_perplexity = eval.HeldOutPerplexity,
            scored_tokens = eval.ScoredTokens,
            trainer_windows = trainerWindows,
            held_out_perplexity_first_windows = eval.Perplexity.OfFirst(trainerWindows),
            parameters,
            active_parameters = active,
            keeps_previous_expert = eval.KeepsPreviousExpert,
            expert_tokens = eval.ExpertTokens,
            vocabulary_coverage = eval.VocabularyCoverage,
            distinct_trigram_ratio = eval.DistinctTrigramRatio,
            compared = others.ToDictionary(o => o.Name, o => o.Perplexity),
            compared_first_windows = others.ToDictionary(o => o.Name, o => o.FirstWindows),
        }, Indented));
        PlotExpertUsage(Path.Combine(outDir, UsagePlotFileName), title, cfg, eval);
        File.WriteAllText(Path.Combine(outDir, "MODEL_CARD.md"), Markdown(title, cfg, parameters, active, training, command, eval, others, heldOut, window, trainerWindows));
        Console.WriteLine($"held-out perplexity {eval.HeldOutPerplexity:F3} over {eval.ScoredTokens} tokens (first {trainerWindows} windows {eval.Perplexity.OfFirst(trainerWindows):F3}); vocabulary coverage {eval.VocabularyCoverage:P1}; distinct 3-grams {eval.DistinctTrigramRatio:F3}");
        foreach (var o in others) Console.WriteLine($"{o.Name}: held-out perplexity {o.Perplexity:F3} (first {trainerWindows} windows {o.FirstWindows:F3})");
        return 0;
    }

    private sealed record ComparedModel(string Name, string Architecture, long Parameters, long Active, double Perplexity, double FirstWindows);

    /// <summary>Parameters one token uses: everything but the routed experts it does not go to.</summary>
    private static long ActiveParameters(MoeModel model)
    {
        var cfg = model.Config;
        long total = model.Weights.ParameterCount();
        long perExpert = 3L * cfg.HiddenSize * cfg.ExpertIntermediateSize;
        int sparse = Enumerable.Range(0, cfg.NumLayers).Count(cfg.IsSparseLayer);
        return total - (long)sparse * (cfg.NumExperts - cfg.NumExpertsPerToken) * perExpert;
    }

    /// <summary>One line: family, shape, experts, router.</summary>
    private static string Describe(ModelConfig cfg)
    {
        var c = CultureInfo.InvariantCulture;
        string shared = cfg.SharedExpertIntermediateSize > 0 ? string.Create(c, $", permanent expert ffn {cfg.SharedExpertIntermediateSize}") : "";
        string router = cfg.Router is { } r
            ? string.Create(c, $", decoupled router (hidden {r.HiddenSize}, {r.NumLayers} blocks, {r.NumHeads}/{r.NumKvHeads} heads, ffn {r.IntermediateSize})")
            : "";
        // one expert, top-1: the gate's softmax over one logit is 1, so the layer is a plain Llama SwiGLU MLP
        string experts = cfg.NumExperts == 1
            ? string.Create(c, $"dense (Llama-style SwiGLU ffn {cfg.ExpertIntermediateSize}, stored as one always-chosen expert)")
            : string.Create(c, $"{cfg.NumExperts} experts (ffn {cfg.ExpertIntermediateSize}), top-{cfg.NumExpertsPerToken}");
        return string.Create(c, $"`{cfg.Architecture.ToModelType()}`, {cfg.NumLayers} layers, hidden {cfg.HiddenSize}, {cfg.NumHeads} heads / {cfg.NumKvHeads} kv heads, {experts}{shared}{router}; vocabulary {cfg.VocabSize}{(cfg.TieWordEmbeddings ? ", tied embeddings" : "")}");
    }

    /// <summary>Share of routed tokens per expert, one bar per layer (one bar when every layer routes alike).</summary>
    private static void PlotExpertUsage(string png, string title, ModelConfig cfg, ModelEvaluation e)
    {
        var shares = e.ExpertTokens.Select(counts => counts.Select(n => 100.0 * n / Math.Max(1, counts.Sum())).ToArray()).ToList();
        bool alike = shares.All(s => s.SequenceEqual(shares[0]));
        var series = alike
            ? [(cfg.NumLayers > 1 ? "every layer (one routing for all)" : "layer 0", shares[0])]
            : shares.Select((s, l) => ($"layer {l}", s)).ToList();
        BenchPlot.GroupedBars(png, $"{title}: expert usage on held-out text", "share of routed tokens (%)",
            Enumerable.Range(0, cfg.NumExperts).Select(x => $"E{x}").ToList(), series);
    }

    private static string Markdown(string title, ModelConfig cfg, long parameters, long active, string training, string command, ModelEvaluation e,
        IReadOnlyList<ComparedModel> others, string heldOut, int window, int trainerWindows)
    {
        var c = CultureInfo.InvariantCulture;
        var s = new StringBuilder();
        s.AppendLine(c, $"# {title}");
        s.AppendLine();
        s.AppendLine(c, $"Architecture: {Describe(cfg)}.");
        s.AppendLine(c, $"Parameters: {parameters / 1e6:F2}M in all, {active / 1e6:F2}M active per token.");
        s.AppendLine();
        s.AppendLine("Data: the King James Bible (Debian `bible-kjv-text`) and the Jargon File 4.4.7 (`jargon-text`), public domain, " +
            "fetched and split by `src/Tools/Corpus/fetch-corpus.sh` (every 50th line of each source held out). Tokenizer: a byte-level " +
            "BPE learned on the training split by `moe-tools train-tokenizer`.");
        if (training.Length > 0)
        {
            s.AppendLine();
            s.AppendLine(c, $"Training: {training}");
        }
        if (command.Length > 0)
        {
            s.AppendLine();
            s.AppendLine("Command:");
            s.AppendLine();
            s.AppendLine("```bash");
            s.AppendLine(command);
            s.AppendLine("```");
        }
        s.AppendLine();
        s.AppendLine("## Held-out perplexity");
        s.AppendLine();
        s.Append(c, $"`{Path.GetFileName(heldOut)}` ({e.ScoredTokens} tokens scored; lines as documents ended by end-of-text, ");
        s.Append(c, $"non-overlapping windows of {window + 1} tokens, every token scored; bf16 weights as served). The trainer's ");
        s.Append(c, $"estimate scores only the first {trainerWindows} windows (all Bible text; the Jargon File lines come later and are harder), ");
        s.AppendLine("so that column is the one to set beside the training log.");
        s.AppendLine();
        s.AppendLine(c, $"| model | architecture | parameters (active) | perplexity | first {trainerWindows} windows |");
        s.AppendLine("| ----- | ------------ | ------------------: | ---------: | ---------: |");
        s.AppendLine(c, $"| {title} (this model) | `{cfg.Architecture.ToModelType()}` | {parameters / 1e6:F2}M ({active / 1e6:F2}M) | {e.HeldOutPerplexity:F3} | {e.Perplexity.OfFirst(trainerWindows):F3} |");
        foreach (var o in others.Where(o => o.Name != title))
            s.AppendLine(c, $"| {o.Name} | {o.Architecture} | {o.Parameters / 1e6:F2}M ({o.Active / 1e6:F2}M) | {o.Perplexity:F3} | {o.FirstWindows:F3} |");
        s.AppendLine();
        s.AppendLine("## Expert usage (share of routed tokens per expert, held-out text)");
        s.AppendLine();
        s.AppendLine(c, $"![expert usage per layer]({UsagePlotFileName})");
        s.AppendLine();
        s.AppendLine("| layer | " + string.Join(" | ", Enumerable.Range(0, cfg.NumExperts).Select(x => $"E{x}")) + " | keeps previous token's top expert |");
        s.AppendLine("| ----: | " + string.Join(" | ", Enumerable.Range(0, cfg.NumExperts).Select(_ => "--:")) + " | --: |");
        // a router-decoupled model routes every layer alike: one row says it all
        bool alike = e.ExpertTokens.All(t => t.SequenceEqual(e.ExpertTokens[0]));
        for (int l = 0; l < (alike ? 1 : cfg.NumLayers); l++)
        {
            long total = Math.Max(1, e.ExpertTokens[l].Sum());
            string shares = string.Join(" | ", e.ExpertTokens[l].Select(n => ((double)n / total).ToString("P1", c)));
            s.AppendLine(c, $"| {(alike ? $"all {cfg.NumLayers}" : l.ToString(c))} | {shares} | {e.KeepsPreviousExpert[l].ToString("P1", c)} |");
        }
        s.AppendLine();
        s.AppendLine("## Samples (temperature 0.7, fixed seeds)");
        s.AppendLine();
        s.AppendLine(c, $"Words in the training vocabulary: {e.VocabularyCoverage:P1}; distinct word 3-grams: {e.DistinctTrigramRatio:F3}.");
        s.AppendLine();
        foreach (var (prompt, text) in e.Samples) s.AppendLine(c, $"- **{prompt}**{text.ReplaceLineEndings(" ")}");
        return s.ToString();
    }
}
