using MoeServer.Kernels.Sampling;
using MoeServer.Kernels.Tokenization;

namespace MoeServer.Gateway.OpenAi;

/// <summary>Token ids as the text and bytes the logprobs fields report (a byte-level token may be part of a UTF-8
/// character: its text then holds U+FFFD, its bytes are exact).</summary>
internal sealed class TokenText(ITokenizer tokenizer)
{
    public string Text(int id) => tokenizer.Decode([id]);

    public int[] Bytes(int id) => tokenizer.TokenBytes(id).Select(b => (int)b).ToArray();

    public ChatTokenLogprob ChatEntry(SampledToken t) => new(Text(t.TokenId), t.Logprob, Bytes(t.TokenId),
        t.TopLogprobs.Select(a => new ChatTopLogprob(Text(a.TokenId), a.Logprob, Bytes(a.TokenId))).ToArray());

    public Dictionary<string, float>? TopDictionary(SampledToken t)
    {
        if (t.TopLogprobs.Count == 0) return null;
        var d = new Dictionary<string, float>();
        foreach (var a in t.TopLogprobs) d.TryAdd(Text(a.TokenId), a.Logprob); // distinct ids may decode alike
        return d;
    }
}
