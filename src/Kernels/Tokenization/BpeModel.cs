namespace MoeServer.Kernels.Tokenization;

/// <summary>A trained byte-level BPE: vocabulary (token → id), ordered merges and added tokens.</summary>
public sealed class BpeModel
{
    /// <summary>Creates a model. The vocabulary must contain every added token and every merge result.</summary>
    public BpeModel(
        IReadOnlyDictionary<string, int> vocab,
        IReadOnlyList<(string Left, string Right)> merges,
        IReadOnlyList<AddedToken> addedTokens)
    {
        ArgumentNullException.ThrowIfNull(vocab);
        ArgumentNullException.ThrowIfNull(merges);
        ArgumentNullException.ThrowIfNull(addedTokens);
        Vocab = vocab;
        Merges = merges;
        AddedTokens = addedTokens;
        VocabSize = vocab.Count == 0 ? 0 : vocab.Values.Max() + 1;
        foreach (AddedToken t in addedTokens)
        {
            VocabSize = Math.Max(VocabSize, t.Id + 1);
        }
    }

    /// <summary>Token string (byte-level characters) → id, including the added tokens.</summary>
    public IReadOnlyDictionary<string, int> Vocab { get; }

    /// <summary>Merges in priority order (first = applied first).</summary>
    public IReadOnlyList<(string Left, string Right)> Merges { get; }

    /// <summary>Added (special) tokens.</summary>
    public IReadOnlyList<AddedToken> AddedTokens { get; }

    /// <summary>Highest id + 1.</summary>
    public int VocabSize { get; }

    /// <summary>The id of a token, or null.</summary>
    public int? TokenToId(string token) => Vocab.TryGetValue(token, out int id) ? id : null;
}
