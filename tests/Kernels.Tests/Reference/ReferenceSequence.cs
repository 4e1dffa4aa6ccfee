namespace MoeServer.Kernels.Tests.Reference;

/// <summary>
/// Per-sequence state of the reference model: the KV cache. Keys[l][p] is the key of position p at
/// layer l after q/k-norm, clipping and RoPE, laid out [nKV * head_dim]; Values[l][p] likewise.
/// Cached vectors are never mutated after being appended, so Clone can share them.
/// </summary>
public sealed class ReferenceSequence
{
    private readonly List<double[]>[] _keys;
    private readonly List<double[]>[] _values;

    public ReferenceSequence(int numLayers)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(numLayers);
        _keys = new List<double[]>[numLayers];
        _values = new List<double[]>[numLayers];
        for (int l = 0; l < numLayers; l++)
        {
            _keys[l] = [];
            _values[l] = [];
        }
    }

    public int NumLayers => _keys.Length;

    /// <summary>Number of positions already processed; the next token goes to this position.</summary>
    public int Length { get; private set; }

    /// <summary>All tokens fed so far, in order.</summary>
    public IReadOnlyList<int> Tokens => _tokens;
    private readonly List<int> _tokens = [];

    public IReadOnlyList<double[]> Keys(int layer) => _keys[layer];
    public IReadOnlyList<double[]> Values(int layer) => _values[layer];

    /// <summary>Independent copy (for branching a prefix); cached vectors are shared read-only.</summary>
    public ReferenceSequence Clone()
    {
        var copy = new ReferenceSequence(NumLayers) { Length = Length };
        for (int l = 0; l < NumLayers; l++)
        {
            copy._keys[l].AddRange(_keys[l]);
            copy._values[l].AddRange(_values[l]);
        }
        copy._tokens.AddRange(_tokens);
        return copy;
    }

    internal void Append(int layer, double[] key, double[] value)
    {
        if (_keys[layer].Count != Length)
            throw new InvalidOperationException($"Layer {layer} cache has {_keys[layer].Count} entries, expected {Length}.");
        _keys[layer].Add(key);
        _values[layer].Add(value);
    }

    /// <summary>Called once a token has passed every layer.</summary>
    internal void Advance(int token)
    {
        for (int l = 0; l < NumLayers; l++)
            if (_keys[l].Count != Length + 1)
                throw new InvalidOperationException($"Layer {l} was not appended for position {Length}.");
        _tokens.Add(token);
        Length++;
    }
}
