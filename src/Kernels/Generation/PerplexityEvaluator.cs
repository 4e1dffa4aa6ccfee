using MoeServer.Kernels.Model;
using MoeServer.Kernels.Tokenization;

namespace MoeServer.Kernels.Generation;

/// <summary>Perplexity and how it was measured.</summary>
public sealed record PerplexityResult(double Perplexity, double MeanNll, int ScoredTokens, int Chunks, int ContextLength, string Protocol);

/// <summary>Perplexity over consecutive windows, with each window's summed negative log-likelihood kept.</summary>
public sealed record WindowedPerplexity(double Perplexity, long ScoredTokens, int Window, double[] WindowNll, int[] WindowTokens)
{
    /// <summary>Perplexity of the first <paramref name="windows"/> windows alone (the trainer scores a prefix).</summary>
    public double OfFirst(int windows)
    {
        int n = Math.Min(windows, WindowNll.Length);
        return Math.Exp(WindowNll.Take(n).Sum() / Math.Max(1, WindowTokens.Take(n).Sum()));
    }
}

/// <summary>
/// Perplexity with llama.cpp's protocol (tools/perplexity): the token stream is cut into non-overlapping chunks of
/// n_ctx tokens, the first token of each chunk is replaced by BOS when the model has one, each chunk is evaluated
/// from an empty cache, and only the second half is scored (the logits at position i predict token i+1, for
/// i in [n_ctx/2, n_ctx-1)), so every scored token has at least n_ctx/2 tokens of context.
/// </summary>
public static class PerplexityEvaluator
{
    public static PerplexityResult Evaluate(MoeModel model, IReadOnlyList<int> tokens, int contextLength,
        Action<int, int>? progress = null)
    {
        if (contextLength < 4) throw new ArgumentOutOfRangeException(nameof(contextLength), "n_ctx must be at least 4");
        int chunks = tokens.Count / contextLength;
        if (chunks == 0)
            throw new ArgumentException($"the text has {tokens.Count} tokens, fewer than one chunk of n_ctx={contextLength}");
        int first = contextLength / 2;
        double nll = 0;
        int count = 0;
        int? bos = model.Config.BosTokenId;
        for (int c = 0; c < chunks; c++)
        {
            var chunk = tokens.Skip(c * contextLength).Take(contextLength).ToArray();
            if (bos is { } b) chunk[0] = b;
            using var seq = model.NewSequence(contextLength);
            var logits = model.ForwardSequence(seq, chunk);
            for (int i = first; i < contextLength - 1; i++)
            {
                nll -= LogSoftmaxAt(logits[i], tokens[c * contextLength + i + 1]);
                count++;
            }
            progress?.Invoke(c + 1, chunks);
        }
        double mean = nll / count;
        return new PerplexityResult(Math.Exp(mean), mean, count, chunks, contextLength,
            $"llama.cpp: {chunks} non-overlapping chunks of n_ctx={contextLength}, BOS {(bos is null ? "not added" : "as first token")}, second half of each chunk scored");
    }

    /// <summary>
    /// A text file as training sees it: every non-empty line is a document, encoded without special-token parsing
    /// and ended by the end-of-text token.
    /// </summary>
    public static int[] LineDocuments(ITokenizer tokenizer, string path)
    {
        int eos = tokenizer.EosId ?? throw new InvalidDataException("the tokenizer has no end-of-text token to separate documents");
        var tokens = new List<int>();
        foreach (var line in File.ReadLines(path))
        {
            if (line.Length == 0) continue;
            tokens.AddRange(tokenizer.Encode(line, parseSpecialTokens: false));
            tokens.Add(eos);
        }
        return tokens.ToArray();
    }

    /// <summary>
    /// The training protocol (moe-tools train's held-out estimate, model cards, the trained-model tests): consecutive
    /// non-overlapping windows of <paramref name="window"/> + 1 tokens, each from an empty cache, every token after the
    /// first of a window scored; the tail shorter than a window is scored too.
    /// </summary>
    public static WindowedPerplexity EvaluateWindows(MoeModel model, IReadOnlyList<int> tokens, int window,
        Action<int, int>? progress = null)
    {
        if (window < 1) throw new ArgumentOutOfRangeException(nameof(window), "the window must hold at least one scored token");
        var nlls = new List<double>();
        var counts = new List<int>();
        for (int start = 0; start + 2 <= tokens.Count; start += window)
        {
            int len = Math.Min(window + 1, tokens.Count - start);
            var chunk = new int[len];
            for (int i = 0; i < len; i++) chunk[i] = tokens[start + i];
            using var seq = model.NewSequence(len);
            var logits = model.ForwardSequence(seq, chunk[..^1]);
            double nll = 0;
            for (int t = 0; t < logits.Length; t++) nll -= LogSoftmaxAt(logits[t], chunk[t + 1]);
            nlls.Add(nll);
            counts.Add(logits.Length);
            progress?.Invoke(start + len, tokens.Count);
        }
        long scored = counts.Sum(c => (long)c);
        if (scored == 0) throw new ArgumentException($"{tokens.Count} tokens are too few to score");
        return new WindowedPerplexity(Math.Exp(nlls.Sum() / scored), scored, window, nlls.ToArray(), counts.ToArray());
    }

    private static double LogSoftmaxAt(float[] logits, int target)
    {
        double max = double.NegativeInfinity;
        foreach (var v in logits) max = Math.Max(max, v);
        double sum = 0;
        foreach (var v in logits) sum += Math.Exp(v - max);
        return logits[target] - max - Math.Log(sum);
    }
}
