using MoeServer.Kernels.Generation;
using MoeServer.Kernels.Tokenization;

namespace MoeServer.Tools.Training;

/// <summary>
/// A text file as one token stream (documents = lines, each ended by the end-of-text token) and seeded random
/// training windows: batch k of a run is the same whoever asks, so a resumed run sees the same data.
/// </summary>
public sealed class TokenCorpus
{
    private readonly int[] _tokens;

    public TokenCorpus(string path, ITokenizer tokenizer)
    {
        _tokens = PerplexityEvaluator.LineDocuments(tokenizer, path);
        Path = path;
    }

    public string Path { get; }
    public int Length => _tokens.Length;
    public ReadOnlySpan<int> Tokens => _tokens;

    /// <summary>Batch <paramref name="step"/>: [batch, length + 1] token ids (inputs and shifted targets).</summary>
    public long[] Batch(long seed, int step, int batch, int length)
    {
        if (_tokens.Length <= length + 1) throw new InvalidDataException($"{Path} has {_tokens.Length} tokens, too few for windows of {length + 1}");
        var rng = new Random(StableSeed(seed, step));
        var ids = new long[batch * (length + 1)];
        for (int b = 0; b < batch; b++)
        {
            int start = rng.Next(_tokens.Length - length - 1);
            for (int t = 0; t <= length; t++) ids[b * (length + 1) + t] = _tokens[start + t];
        }
        return ids;
    }

    /// <summary>A per-step seed that is the same in every process (HashCode.Combine is randomised per process).</summary>
    private static int StableSeed(long seed, int step)
    {
        ulong z = unchecked((ulong)seed * 0x9E3779B97F4A7C15UL + (ulong)step);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return (int)((z ^ (z >> 31)) & 0x7FFFFFFF);
    }

    /// <summary>Consecutive non-overlapping windows of length + 1 tokens covering the stream (for held-out scoring).</summary>
    public IEnumerable<long[]> Windows(int length, int max)
    {
        int count = 0;
        for (int start = 0; start + length + 1 <= _tokens.Length && (max == 0 || count < max); start += length, count++)
            yield return _tokens.AsSpan(start, length + 1).ToArray().Select(t => (long)t).ToArray();
    }
}
