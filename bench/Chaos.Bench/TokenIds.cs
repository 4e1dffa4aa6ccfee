using MoeServer.Kernels.Tokenization;

namespace MoeServer.Bench.Chaos;

/// <summary>
/// Token ids from the exact bytes that chat logprobs report per token (<c>logprobs.content[].bytes</c>). Both models use
/// byte-level BPE, whose tokens are distinct byte strings, so the bytes name the id; a byte string shared by two ids
/// (a special token spelled like a plain one) maps to <see cref="Ambiguous"/> and is counted, never guessed.
/// </summary>
internal sealed class TokenIds
{
    public const int Unknown = -1;
    public const int Ambiguous = -2;

    private readonly Dictionary<string, int> _byBytes = new(StringComparer.Ordinal);
    private readonly ITokenizer _tokenizer;

    public TokenIds(ITokenizer tokenizer)
    {
        _tokenizer = tokenizer;
        for (int id = 0; id < tokenizer.VocabSize; id++)
        {
            var bytes = BytesOf(id);
            if (bytes is null) continue;
            string key = Convert.ToHexString(bytes);
            _byBytes[key] = _byBytes.ContainsKey(key) ? Ambiguous : id;
        }
    }

    /// <summary>Byte strings that more than one id spells (0 for both models).</summary>
    public int AmbiguousCount => _byBytes.Values.Count(v => v == Ambiguous);

    /// <summary>Every special token (end of text, chat template markers): the bench bans them with logit_bias.</summary>
    public IReadOnlyList<int> SpecialIds => Enumerable.Range(0, _tokenizer.VocabSize).Where(_tokenizer.IsSpecial).ToArray();

    public bool IsSpecial(int id) => _tokenizer.IsSpecial(id);

    /// <summary>What the gateway reports as a token's bytes (the same rule as its logprobs writer).</summary>
    public byte[]? BytesOf(int id)
    {
        if (_tokenizer.IdToToken(id) is null) return null;
        return _tokenizer.TokenBytes(id);
    }

    public int Lookup(ReadOnlySpan<byte> bytes) => _byBytes.TryGetValue(Convert.ToHexString(bytes), out int id) ? id : Unknown;
}
