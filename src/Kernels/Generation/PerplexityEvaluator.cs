using MoeServer.Kernels.Model;

namespace MoeServer.Kernels.Generation;

/// <summary>Perplexity and how it was measured.</summary>
public sealed record PerplexityResult(double Perplexity, double MeanNll, int ScoredTokens, int Chunks, int ContextLength, string Protocol);

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

    private static double LogSoftmaxAt(float[] logits, int target)
    {
        double max = double.NegativeInfinity;
        foreach (var v in logits) max = Math.Max(max, v);
        double sum = 0;
        foreach (var v in logits) sum += Math.Exp(v - max);
        return logits[target] - max - Math.Log(sum);
    }
}
