namespace MoeServer.Kernels.Tokenization;

/// <summary>
/// What the engine, the gateway and the tools need of a tokenizer: text to ids and back (byte-exact, for streaming
/// detokenization), the special tokens, and the bos/eos conventions. Implemented by <see cref="ITokenizer"/>
/// (tokenizer.json) and by the tokenizers a GGUF file carries in its <c>tokenizer.ggml.*</c> metadata.
/// </summary>
public interface ITokenizer
{
    /// <summary>Highest id + 1.</summary>
    int VocabSize { get; }

    /// <summary>The bos token text, if the tokenizer has one.</summary>
    string? BosToken { get; }

    /// <summary>The eos token text, if the tokenizer has one.</summary>
    string? EosToken { get; }

    /// <summary>The bos token id, if any.</summary>
    int? BosId { get; }

    /// <summary>The eos token id, if any.</summary>
    int? EosId { get; }

    /// <summary>Whether the model expects bos before a prompt that does not start with it (GGUF
    /// <c>tokenizer.ggml.add_bos_token</c>; HF tokenizers here: false, chat templates put bos in the text).</summary>
    bool AddBosToken { get; }

    /// <summary>The id of a token (its vocabulary string), or null.</summary>
    int? TokenToId(string token);

    /// <summary>The vocabulary string of an id, or null.</summary>
    string? IdToToken(int id);

    /// <summary>Whether the id is a special (control) token.</summary>
    bool IsSpecial(int id);

    /// <summary>Encodes text without adding bos/eos. Special tokens in the text become their ids; with
    /// <paramref name="parseSpecialTokens"/> false they are encoded as plain text.</summary>
    int[] Encode(string text, bool parseSpecialTokens = true);

    /// <summary>Decodes ids to text (invalid UTF-8 becomes U+FFFD); unknown ids are skipped.</summary>
    string Decode(IEnumerable<int> ids, bool skipSpecialTokens = false);

    /// <summary>Appends the exact bytes one id decodes to (nothing for unknown ids or skipped specials).</summary>
    void AppendTokenBytes(int id, bool skipSpecialTokens, List<byte> output);
}

/// <summary>Helpers over <see cref="ITokenizer"/>.</summary>
public static class TokenizerExtensions
{
    /// <summary>The bytes of one token as the logprobs fields report them (special tokens: their text's UTF-8).</summary>
    public static byte[] TokenBytes(this ITokenizer tokenizer, int id)
    {
        if (tokenizer.IdToToken(id) is not { } token) return [];
        if (tokenizer.IsSpecial(id)) return System.Text.Encoding.UTF8.GetBytes(token);
        var bytes = new List<byte>();
        tokenizer.AppendTokenBytes(id, false, bytes);
        return bytes.ToArray();
    }

    /// <summary>Encodes a prompt as the model's own tokenizer settings ask: bos first when
    /// <see cref="ITokenizer.AddBosToken"/> (as llama.cpp's llama_tokenize with add_special does, even when the text
    /// starts with a bos of its own).</summary>
    public static int[] EncodePrompt(this ITokenizer tokenizer, string text, bool parseSpecialTokens = true)
    {
        var ids = tokenizer.Encode(text, parseSpecialTokens);
        return tokenizer.AddBosToken && tokenizer.BosId is { } bos ? [bos, .. ids] : ids;
    }
}
