using System.Text.RegularExpressions;
using MoeServer.Kernels.Generation;
using MoeServer.Kernels.Model;
using MoeServer.Kernels.Sampling;
using MoeServer.Kernels.Tokenization;

namespace MoeServer.Tools.ModelCards;

/// <summary>What a model card reports about a served model, measured with the serving runtime.</summary>
public sealed record ModelEvaluation(
    WindowedPerplexity Perplexity,
    long[][] ExpertTokens,
    double[] KeepsPreviousExpert,
    IReadOnlyList<(string Prompt, string Text)> Samples,
    double VocabularyCoverage,
    double DistinctTrigramRatio)
{
    public double HeldOutPerplexity => Perplexity.Perplexity;
    public long ScoredTokens => Perplexity.ScoredTokens;
}

/// <summary>
/// Measures a checkpoint the way its model card and the acceptance tests do: held-out perplexity (documents = lines,
/// each ended by end-of-text, as in training; non-overlapping windows, every token scored), how many tokens each
/// expert of each layer got and how often a token's top expert is the previous token's, and seeded samples from
/// Bible-style prompts with their vocabulary coverage and distinct word-trigram ratio.
/// </summary>
public static partial class ModelEvaluator
{
    public static readonly string[] BiblePrompts =
    [
        "In the beginning", "And God said", "The LORD is my shepherd", "And it came to pass", "Blessed are the",
        "And Moses said unto the people", "For God so loved", "Then said Jesus",
    ];

    [GeneratedRegex("[A-Za-z']+")]
    private static partial Regex WordRegex();

    public static IEnumerable<string> Words(string text) =>
        WordRegex().Matches(text).Select(m => m.Value.ToLowerInvariant().Trim('\''))
            .Where(w => w.Length > 0);

    public static ModelEvaluation Evaluate(MoeModel model, ITokenizer tokenizer, string heldOut, ISet<string> vocabulary,
        int window = 128, long seed = 1, int sampleTokens = 48, Action<int, int>? progress = null)
    {
        var cfg = model.Config;
        var counts = Enumerable.Range(0, cfg.NumLayers).Select(_ => new long[cfg.NumExperts]).ToArray();
        var kept = new long[cfg.NumLayers];
        var pairs = new long[cfg.NumLayers];
        model.RoutingObserver = r =>
        {
            foreach (var experts in r.ExpertsOfToken)
                foreach (int e in experts) counts[r.Layer][e]++;
            // top expert of token t vs t-1 inside the forward (one window): how local routing is
            for (int t = 1; t < r.ExpertsOfToken.Length; t++)
            {
                pairs[r.Layer]++;
                if (r.ExpertsOfToken[t][0] == r.ExpertsOfToken[t - 1][0]) kept[r.Layer]++;
            }
        };
        WindowedPerplexity perplexity;
        try
        {
            perplexity = PerplexityEvaluator.EvaluateWindows(model, PerplexityEvaluator.LineDocuments(tokenizer, heldOut), window, progress);
        }
        finally
        {
            model.RoutingObserver = null;
        }

        var generator = new TextGenerator(model, tokenizer);
        var samples = new List<(string, string)>();
        var words = new List<string>();
        long trigrams = 0;
        var distinct = new HashSet<string>();
        for (int i = 0; i < BiblePrompts.Length; i++)
        {
            var sampling = new SamplingParams { Temperature = 0.7f, Seed = seed + i, MaxTokens = sampleTokens };
            var result = generator.Generate(tokenizer.Encode(BiblePrompts[i], parseSpecialTokens: false), sampling);
            samples.Add((BiblePrompts[i], result.Text));
            var w = Words(result.Text).ToArray();
            words.AddRange(w);
            for (int j = 0; j + 2 < w.Length; j++)
            {
                trigrams++;
                distinct.Add($"{w[j]} {w[j + 1]} {w[j + 2]}");
            }
        }
        double coverage = words.Count == 0 ? 0 : (double)words.Count(vocabulary.Contains) / words.Count;
        double distinctRatio = trigrams == 0 ? 0 : (double)distinct.Count / trigrams;
        return new ModelEvaluation(perplexity, counts,
            kept.Select((k, l) => pairs[l] == 0 ? 0 : (double)k / pairs[l]).ToArray(), samples, coverage, distinctRatio);
    }
}
