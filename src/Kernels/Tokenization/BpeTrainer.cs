using System.Text.RegularExpressions;

namespace MoeServer.Kernels.Tokenization;

/// <summary>Options for <see cref="BpeTrainer"/>.</summary>
public sealed class BpeTrainerOptions
{
    /// <summary>
    /// Target total vocabulary size, counting the 256 byte symbols, the learned merges and the special
    /// tokens. Training stops early (smaller vocabulary) when no pair reaches <see cref="MinFrequency"/>.
    /// </summary>
    public int VocabSize { get; init; } = 4096;

    /// <summary>Special tokens to add (as HF added tokens with special = true), in id order.</summary>
    public IReadOnlyList<string> SpecialTokens { get; init; } = [];

    /// <summary>
    /// When true the special tokens take ids 0..n-1 (HF trainer default, Mistral/Llama style); when
    /// false (default) they follow the learned vocabulary (GPT-2/Qwen style).
    /// </summary>
    public bool SpecialTokensFirst { get; init; }

    /// <summary>A pair must occur at least this often to be merged.</summary>
    public int MinFrequency { get; init; } = 1;
}

/// <summary>
/// Learns a GPT-2-style byte-level BPE: text is split with the GPT-2 regex, each piece becomes its
/// UTF-8 bytes (as byte-level characters), the base vocabulary is the 256 byte symbols, then the most
/// frequent adjacent pair is merged repeatedly (ties: smaller left id, then smaller right id) until
/// the target size is reached. Pair counts are maintained incrementally with a lazy max-heap.
/// </summary>
public static class BpeTrainer
{
    /// <summary>Trains on one text.</summary>
    public static BpeModel Train(string text, BpeTrainerOptions options) => Train([text], options);

    /// <summary>Trains on several texts (counts are pooled).</summary>
    public static BpeModel Train(IEnumerable<string> texts, BpeTrainerOptions options)
    {
        ArgumentNullException.ThrowIfNull(texts);
        ArgumentNullException.ThrowIfNull(options);

        IReadOnlyList<string> specials = options.SpecialTokens;
        if (specials.Distinct(StringComparer.Ordinal).Count() != specials.Count)
        {
            throw new ArgumentException("Special tokens must be distinct.", nameof(options));
        }

        if (specials.Any(string.IsNullOrEmpty))
        {
            throw new ArgumentException("Special tokens must be non-empty.", nameof(options));
        }

        int bpeTarget = options.VocabSize - specials.Count;
        if (bpeTarget < 256)
        {
            throw new ArgumentOutOfRangeException(
                nameof(options),
                $"VocabSize {options.VocabSize} leaves no room for the 256 byte symbols and {specials.Count} special tokens.");
        }

        // Internal symbol ids: 0..255 are the byte symbols in GPT-2 vocab order; merges append.
        var tokens = new List<string>(ByteLevel.BaseAlphabet);
        var tokenIds = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < tokens.Count; i++)
        {
            tokenIds[tokens[i]] = i;
        }

        var forbidden = new HashSet<string>(specials, StringComparer.Ordinal);
        var (words, wordCounts) = CountWords(texts, specials, tokenIds);

        var merges = new List<(string, string)>();
        if (tokens.Count < bpeTarget)
        {
            Learn(words, wordCounts, tokens, tokenIds, merges, forbidden, bpeTarget, Math.Max(1, options.MinFrequency));
        }

        // Final ids.
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        var added = new List<AddedToken>();
        int offset = options.SpecialTokensFirst ? specials.Count : 0;
        for (int i = 0; i < tokens.Count; i++)
        {
            vocab[tokens[i]] = i + offset;
        }

        for (int i = 0; i < specials.Count; i++)
        {
            int id = options.SpecialTokensFirst ? i : tokens.Count + i;
            if (vocab.ContainsKey(specials[i]))
            {
                // Only possible for a special spelled as a single byte symbol, e.g. "!".
                throw new ArgumentException($"Special token '{specials[i]}' collides with a byte symbol.", nameof(options));
            }

            vocab[specials[i]] = id;
            added.Add(new AddedToken(id, specials[i], Special: true));
        }

        return new BpeModel(vocab, merges, added);
    }

    private static (List<int[]> Words, List<int> Counts) CountWords(
        IEnumerable<string> texts, IReadOnlyList<string> specials, Dictionary<string, int> tokenIds)
    {
        Regex regex = ByteLevel.Gpt2Regex;
        var counts = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (string text in texts)
        {
            foreach (string segment in SplitOnSpecials(text, specials))
            {
                foreach (ValueMatch m in regex.EnumerateMatches(segment))
                {
                    string piece = segment.Substring(m.Index, m.Length);
                    counts[piece] = counts.GetValueOrDefault(piece) + 1;
                }
            }
        }

        var words = new List<int[]>(counts.Count);
        var wordCounts = new List<int>(counts.Count);
        foreach (var (piece, count) in counts.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            string mapped = ByteLevel.Encode(piece);
            var symbols = new int[mapped.Length];
            for (int i = 0; i < mapped.Length; i++)
            {
                symbols[i] = tokenIds[mapped[i].ToString()];
            }

            words.Add(symbols);
            wordCounts.Add(count);
        }

        return (words, wordCounts);
    }

    private static IEnumerable<string> SplitOnSpecials(string text, IReadOnlyList<string> specials)
    {
        if (specials.Count == 0)
        {
            yield return text;
            yield break;
        }

        int start = 0;
        while (start < text.Length)
        {
            int best = -1;
            int bestLen = 0;
            foreach (string s in specials)
            {
                int at = text.IndexOf(s, start, StringComparison.Ordinal);
                if (at >= 0 && (best < 0 || at < best || (at == best && s.Length > bestLen)))
                {
                    best = at;
                    bestLen = s.Length;
                }
            }

            if (best < 0)
            {
                yield return text[start..];
                yield break;
            }

            if (best > start)
            {
                yield return text[start..best];
            }

            start = best + bestLen;
        }
    }

    private static long Key(int a, int b) => ((long)a << 32) | (uint)b;

    private static void Learn(
        List<int[]> words,
        List<int> wordCounts,
        List<string> tokens,
        Dictionary<string, int> tokenIds,
        List<(string, string)> merges,
        HashSet<string> forbidden,
        int target,
        int minFrequency)
    {
        var lengths = new int[words.Count];
        var pairCounts = new Dictionary<long, long>();
        var where = new Dictionary<long, HashSet<int>>();
        for (int w = 0; w < words.Count; w++)
        {
            int[] s = words[w];
            lengths[w] = s.Length;
            for (int i = 0; i + 1 < s.Length; i++)
            {
                long k = Key(s[i], s[i + 1]);
                pairCounts[k] = pairCounts.GetValueOrDefault(k) + wordCounts[w];
                if (!where.TryGetValue(k, out HashSet<int>? set))
                {
                    where[k] = set = [];
                }

                set.Add(w);
            }
        }

        var heap = new PriorityQueue<long, (long Count, long Key)>(PairOrder.Instance);
        foreach (var (k, c) in pairCounts)
        {
            heap.Enqueue(k, (c, k));
        }

        var banned = new HashSet<long>();
        var recorded = new HashSet<long>();
        var delta = new Dictionary<long, long>();
        var scratch = new List<int>();

        while (tokens.Count < target && heap.TryDequeue(out long key, out var prio))
        {
            long current = pairCounts.GetValueOrDefault(key);
            if (current != prio.Count)
            {
                if (current > 0)
                {
                    heap.Enqueue(key, (current, key));
                }

                continue;
            }

            if (current < minFrequency)
            {
                break;
            }

            if (banned.Contains(key))
            {
                continue;
            }

            int a = (int)(key >> 32);
            int b = (int)(uint)key;
            string merged = tokens[a] + tokens[b];
            if (forbidden.Contains(merged))
            {
                banned.Add(key);
                continue;
            }

            if (!tokenIds.TryGetValue(merged, out int x))
            {
                x = tokens.Count;
                tokens.Add(merged);
                tokenIds[merged] = x;
            }

            // A pair can only reappear after a merge reused an existing token string; applying it again
            // to the words is right, but the merge list must stay free of duplicates.
            if (recorded.Add(key))
            {
                merges.Add((tokens[a], tokens[b]));
            }

            delta.Clear();
            HashSet<int> affected = where[key];
            where.Remove(key);
            foreach (int w in affected)
            {
                int[] s = words[w];
                int len = lengths[w];
                long wc = wordCounts[w];

                bool found = false;
                for (int i = 0; i + 1 < len; i++)
                {
                    if (s[i] == a && s[i + 1] == b)
                    {
                        found = true;
                        break;
                    }
                }

                if (!found)
                {
                    continue;
                }

                for (int i = 0; i + 1 < len; i++)
                {
                    long k = Key(s[i], s[i + 1]);
                    delta[k] = delta.GetValueOrDefault(k) - wc;
                }

                scratch.Clear();
                for (int i = 0; i < len; i++)
                {
                    if (i + 1 < len && s[i] == a && s[i + 1] == b)
                    {
                        scratch.Add(x);
                        i++;
                    }
                    else
                    {
                        scratch.Add(s[i]);
                    }
                }

                for (int i = 0; i < scratch.Count; i++)
                {
                    s[i] = scratch[i];
                }

                len = scratch.Count;
                lengths[w] = len;
                for (int i = 0; i + 1 < len; i++)
                {
                    long k = Key(s[i], s[i + 1]);
                    delta[k] = delta.GetValueOrDefault(k) + wc;
                    if (s[i] == x || s[i + 1] == x)
                    {
                        if (!where.TryGetValue(k, out HashSet<int>? set))
                        {
                            where[k] = set = [];
                        }

                        set.Add(w);
                    }
                }
            }

            foreach (var (k, d) in delta)
            {
                if (d == 0)
                {
                    continue;
                }

                long now = pairCounts.GetValueOrDefault(k) + d;
                if (now <= 0)
                {
                    pairCounts.Remove(k);
                }
                else
                {
                    pairCounts[k] = now;
                    if (d > 0)
                    {
                        heap.Enqueue(k, (now, k));
                    }
                }
            }
        }
    }

    /// <summary>Max-heap order on (count desc, key asc) for .NET's min-heap PriorityQueue.</summary>
    private sealed class PairOrder : IComparer<(long Count, long Key)>
    {
        public static readonly PairOrder Instance = new();

        public int Compare((long Count, long Key) x, (long Count, long Key) y)
        {
            int c = y.Count.CompareTo(x.Count);
            return c != 0 ? c : x.Key.CompareTo(y.Key);
        }
    }
}
