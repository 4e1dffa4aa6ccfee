namespace MoeServer.Kernels.Tokenization;

/// <summary>
/// Byte-level BPE of one pre-token in O(n log n): HF tokenizers' <c>Word::merge_all</c> (always merge the adjacent
/// pair of lowest merge rank, the leftmost on ties) over a doubly linked list of symbols with a heap of candidate pairs
/// (stale entries skipped when popped). Microsoft.ML.Tokenizers' BPE removes merged symbols from a list, quadratic in
/// the length of the word: a single 80,000-character word took 0.8 s and 4 MiB of one letter would take minutes,
/// so the tokenizer hands it pieces longer than <see cref="LongPiece"/> characters (which ordinary text never has).
/// </summary>
internal sealed class BpeMerger
{
    /// <summary>Pre-tokens longer than this (in characters) are merged here rather than by Microsoft.ML.Tokenizers.</summary>
    public const int LongPiece = 256;

    private readonly Dictionary<string, int> _vocab;
    private readonly Dictionary<(int Left, int Right), (int Rank, int Merged)> _merges;

    public BpeMerger(Dictionary<string, int> vocab, IReadOnlyList<string> merges)
    {
        _vocab = vocab;
        _merges = new Dictionary<(int, int), (int, int)>(merges.Count);
        for (int rank = 0; rank < merges.Count; rank++)
        {
            string[] parts = merges[rank].Split(' ');
            if (parts.Length != 2 || !vocab.TryGetValue(parts[0], out int l) || !vocab.TryGetValue(parts[1], out int r)
                || !vocab.TryGetValue(parts[0] + parts[1], out int merged))
            {
                continue; // a merge whose parts or result are not in the vocabulary can never apply
            }

            _merges.TryAdd((l, r), (rank, merged));
        }
    }

    /// <summary>Appends the ids of one pre-token, given as byte-level characters (one character per byte).</summary>
    public void Encode(string byteLevelPiece, List<int> ids)
    {
        int n = byteLevelPiece.Length;
        if (n == 0)
        {
            return;
        }

        var symbol = new int[n];
        var prev = new int[n];
        var next = new int[n];
        for (int i = 0; i < n; i++)
        {
            if (!_vocab.TryGetValue(byteLevelPiece[i].ToString(), out symbol[i]))
            {
                throw new InvalidOperationException($"byte-level character U+{(int)byteLevelPiece[i]:X4} is not in the vocabulary");
            }

            prev[i] = i - 1;
            next[i] = i + 1 < n ? i + 1 : -1;
        }

        // (rank, position of the left symbol) -> lowest rank first, then leftmost, as HF does.
        var heap = new PriorityQueue<(int Left, int RightSymbol, int Merged), (int Rank, int Position)>();
        void Offer(int left)
        {
            int right = next[left];
            if (right >= 0 && _merges.TryGetValue((symbol[left], symbol[right]), out var m))
            {
                heap.Enqueue((left, symbol[right], m.Merged), (m.Rank, left));
            }
        }

        for (int i = 0; i < n - 1; i++)
        {
            Offer(i);
        }

        var alive = new bool[n];
        Array.Fill(alive, true);
        while (heap.TryDequeue(out var pair, out var key))
        {
            int left = pair.Left;
            int right = next[left];
            // stale: the left symbol was merged away, or its right neighbour changed since the pair was offered
            if (!alive[left] || right < 0 || symbol[right] != pair.RightSymbol
                || !_merges.TryGetValue((symbol[left], symbol[right]), out var m) || m.Rank != key.Rank)
            {
                continue;
            }

            symbol[left] = pair.Merged;
            alive[right] = false;
            next[left] = next[right];
            if (next[right] >= 0)
            {
                prev[next[right]] = left;
            }

            if (prev[left] >= 0)
            {
                Offer(prev[left]);
            }

            Offer(left);
        }

        for (int i = 0; i >= 0; i = next[i])
        {
            ids.Add(symbol[i]);
        }
    }

    /// <summary>
    /// The same merge order over symbol strings with merge ranks (llama.cpp's GGUF byte-level BPE, whose merged symbols
    /// need not be tokens): the byte-level characters of <paramref name="word"/> merged, lowest rank first and leftmost
    /// on ties, until no adjacent pair has a rank. O(n log n) where rescanning the list for the best pair is quadratic.
    /// </summary>
    public static List<string> MergeByRank(string word, IReadOnlyDictionary<(string, string), int> ranks)
    {
        int n = word.Length;
        var symbol = new string[n];
        var next = new int[n];
        var prev = new int[n];
        var alive = new bool[n];
        for (int i = 0; i < n; i++)
        {
            symbol[i] = word[i].ToString();
            prev[i] = i - 1;
            next[i] = i + 1 < n ? i + 1 : -1;
            alive[i] = true;
        }

        var heap = new PriorityQueue<(int Left, string Right), (int Rank, int Position)>();
        void Offer(int left)
        {
            int right = next[left];
            if (right >= 0 && ranks.TryGetValue((symbol[left], symbol[right]), out int rank))
            {
                heap.Enqueue((left, symbol[right]), (rank, left));
            }
        }

        for (int i = 0; i + 1 < n; i++)
        {
            Offer(i);
        }

        while (heap.TryDequeue(out var pair, out var key))
        {
            int left = pair.Left;
            int right = next[left];
            if (!alive[left] || right < 0 || symbol[right] != pair.Right
                || !ranks.TryGetValue((symbol[left], symbol[right]), out int rank) || rank != key.Rank)
            {
                continue; // stale
            }

            symbol[left] += symbol[right];
            alive[right] = false;
            next[left] = next[right];
            if (next[right] >= 0)
            {
                prev[next[right]] = left;
            }

            if (prev[left] >= 0)
            {
                Offer(prev[left]);
            }

            Offer(left);
        }

        var result = new List<string>();
        for (int i = n == 0 ? -1 : 0; i >= 0; i = next[i])
        {
            result.Add(symbol[i]);
        }

        return result;
    }
}
