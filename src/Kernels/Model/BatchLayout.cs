namespace MoeServer.Kernels.Model;

/// <summary>
/// One forward over many sequences: each segment appends <see cref="Tokens"/> to its sequence's KV cache starting
/// at the cache's current length. Prefill chunks and single decode tokens mix freely; rows of the flattened
/// [totalTokens, hidden] activations follow segment order.
/// </summary>
public sealed record BatchSegment(KvCache Cache, IReadOnlyList<int> Tokens, RoutingOverride? Routing = null)
{
    public RoutingOverride RoutingOrDefault => Routing ?? RoutingOverride.None;
}

public sealed class BatchLayout
{
    public IReadOnlyList<BatchSegment> Segments { get; }
    /// <summary>Row where each segment starts in the flattened activations.</summary>
    public IReadOnlyList<int> RowStart { get; }
    /// <summary>Position (in its own sequence) of every row.</summary>
    public int[] Positions { get; }
    /// <summary>Segment index of every row.</summary>
    public int[] SegmentOfRow { get; }
    public int[] TokenIds { get; }
    public int TotalTokens => Positions.Length;
    /// <summary>Every segment is a single token (a pure decode step).</summary>
    public bool IsAllDecode { get; }
    /// <summary>The decoupled router's expert probabilities per row, [T * E] (<c>readme_moe</c>; set by
    /// <see cref="MoeModel.Embed"/>, before any backbone layer runs).</summary>
    public float[]? RouterProbabilities { get; internal set; }

    public BatchLayout(IReadOnlyList<BatchSegment> segments)
    {
        if (segments.Count == 0) throw new ArgumentException("a batch needs at least one segment", nameof(segments));
        var seen = new HashSet<KvCache>(ReferenceEqualityComparer.Instance);
        Segments = segments;
        var starts = new int[segments.Count];
        int total = segments.Sum(s => s.Tokens.Count);
        Positions = new int[total];
        SegmentOfRow = new int[total];
        TokenIds = new int[total];
        int row = 0;
        for (int s = 0; s < segments.Count; s++)
        {
            var seg = segments[s];
            if (seg.Tokens.Count == 0) throw new ArgumentException($"segment {s} has no tokens", nameof(segments));
            if (!seen.Add(seg.Cache)) throw new ArgumentException($"segment {s} repeats a sequence already in the batch", nameof(segments));
            starts[s] = row;
            for (int i = 0; i < seg.Tokens.Count; i++, row++)
            {
                Positions[row] = seg.Cache.Length + i;
                SegmentOfRow[row] = s;
                TokenIds[row] = seg.Tokens[i];
            }
        }
        RowStart = starts;
        IsAllDecode = total == segments.Count;
    }

    /// <summary>Row of each segment's last token (where next-token logits come from).</summary>
    public int[] LastRows() => Segments.Select((s, i) => RowStart[i] + s.Tokens.Count - 1).ToArray();
}
