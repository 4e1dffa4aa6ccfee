using System.Text;

namespace MoeServer.Kernels.Tokenization;

/// <summary>
/// Incremental detokenizer for generation: fed one token id at a time, returns only the text that
/// became complete. A UTF-8 character split across tokens is held back until its last byte arrives
/// (no U+FFFD for a split character); a byte sequence that can never become valid is emitted as
/// U+FFFD as soon as that is known, and an incomplete tail becomes U+FFFD on <see cref="Flush"/>.
/// The concatenation of every <see cref="Push"/> result and the final <see cref="Flush"/> equals
/// <see cref="ITokenizer.Decode"/> of all the ids (with the same skipSpecialTokens).
/// Not thread-safe: use one instance per sequence.
/// </summary>
public sealed class StreamingDetokenizer
{
    private readonly ITokenizer _tokenizer;
    private readonly bool _skipSpecialTokens;
    private readonly Decoder _decoder;
    private readonly List<byte> _bytes = new(16);
    private char[] _chars = new char[64];

    /// <summary>Creates a detokenizer for one sequence.</summary>
    public StreamingDetokenizer(ITokenizer tokenizer, bool skipSpecialTokens = false)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        _tokenizer = tokenizer;
        _skipSpecialTokens = skipSpecialTokens;
        _decoder = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: false).GetDecoder();
    }

    /// <summary>Whether bytes of an incomplete character are being held back.</summary>
    public bool HasPendingBytes => _decoder.GetCharCount([], flush: true) > 0; // GetCharCount leaves the state as is.

    /// <summary>Adds one token id; returns the newly completed text (possibly empty).</summary>
    public string Push(int id)
    {
        _bytes.Clear();
        _tokenizer.AppendTokenBytes(id, _skipSpecialTokens, _bytes);
        if (_bytes.Count == 0)
        {
            return string.Empty;
        }

        return DecodeBytes(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_bytes), flush: false);
    }

    /// <summary>Adds several ids; returns the newly completed text.</summary>
    public string Push(IEnumerable<int> ids)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var sb = new StringBuilder();
        foreach (int id in ids)
        {
            sb.Append(Push(id));
        }

        return sb.ToString();
    }

    /// <summary>Ends the sequence: returns U+FFFD for any incomplete trailing bytes, and resets.</summary>
    public string Flush()
    {
        string tail = DecodeBytes([], flush: true);
        _decoder.Reset();
        return tail;
    }

    /// <summary>Discards any held-back bytes and starts a new sequence.</summary>
    public void Reset()
    {
        _decoder.Reset();
    }

    private string DecodeBytes(ReadOnlySpan<byte> bytes, bool flush)
    {
        int max = _decoder.GetCharCount(bytes, flush);
        if (_chars.Length < max)
        {
            _chars = new char[Math.Max(max, _chars.Length * 2)];
        }

        int n = _decoder.GetChars(bytes, _chars, flush);
        return new string(_chars, 0, n);
    }
}
