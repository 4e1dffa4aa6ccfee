using System.Text;
using System.Text.RegularExpressions;
using MoeServer.Kernels.Formats;
using MoeServer.Kernels.Formats.Gguf;

namespace MoeServer.Kernels.Tokenization;

/// <summary>llama.cpp's token types (<c>tokenizer.ggml.token_type</c>).</summary>
public enum GgufTokenType
{
    Undefined = 0,
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

/// <summary>
/// A tokenizer from a GGUF file's <c>tokenizer.ggml.*</c> metadata, encoding as llama.cpp does: special tokens are
/// split out of the text first (user-defined tokens always, control and unknown ones when special tokens are parsed,
/// longest first), and each remaining fragment goes to the model: byte-level BPE (<c>gpt2</c>, pre-tokenized by the
/// regexes <c>tokenizer.ggml.pre</c> names, merged by rank) or SentencePiece BPE (<c>llama</c>, merged by score with
/// <c>&lt;0xNN&gt;</c> byte fallback and the ▁ whitespace convention). Bos/eos/eot/unk/pad ids and add_bos/add_eos
/// come from the metadata.
/// </summary>
public abstract class GgufTokenizer : ITokenizer
{
    private readonly string[] _tokens;
    private readonly GgufTokenType[] _types;
    private readonly Dictionary<string, int> _ids = new(StringComparer.Ordinal);
    private readonly Dictionary<char, (string Text, int Id, bool Special)[]> _specialsByFirstChar;

    private protected GgufTokenizer(string source, string[] tokens, GgufTokenType[] types, GgufMappedFile meta)
    {
        Source = source;
        _tokens = tokens;
        _types = types;
        for (int i = 0; i < tokens.Length; i++) _ids.TryAdd(tokens[i], i); // the first id of a duplicated text wins
        int? Id(string key)
        {
            int? v = GgufModel.IntOf(meta, key);
            return v is { } i && i >= 0 && i < tokens.Length ? i : null;
        }
        BosId = Id("tokenizer.ggml.bos_token_id");
        EosId = Id("tokenizer.ggml.eos_token_id");
        EotId = Id("tokenizer.ggml.eot_token_id");
        UnknownId = Id("tokenizer.ggml.unknown_token_id");
        PadId = Id("tokenizer.ggml.padding_token_id");
        _specialsByFirstChar = Enumerable.Range(0, tokens.Length)
            .Where(i => types[i] is GgufTokenType.Control or GgufTokenType.UserDefined or GgufTokenType.Unknown && tokens[i].Length > 0)
            .Select(i => (Text: tokens[i], Id: i, Special: types[i] != GgufTokenType.UserDefined))
            .GroupBy(t => t.Text[0])
            .ToDictionary(g => g.Key, g => g.OrderByDescending(t => t.Text.Length).ToArray());
    }

    /// <summary>The file the tokenizer came from (error messages).</summary>
    public string Source { get; }
    public int VocabSize => _tokens.Length;
    public int? BosId { get; }
    public int? EosId { get; }
    /// <summary>End of turn (<c>tokenizer.ggml.eot_token_id</c>), if any.</summary>
    public int? EotId { get; }
    public int? UnknownId { get; }
    public int? PadId { get; }
    public string? BosToken => BosId is { } b ? _tokens[b] : null;
    public string? EosToken => EosId is { } e ? _tokens[e] : null;
    public bool AddBosToken { get; private protected init; }
    /// <summary><c>tokenizer.ggml.add_eos_token</c>.</summary>
    public bool AddEosToken { get; private protected init; }
    /// <summary><c>tokenizer.ggml.model</c>.</summary>
    public abstract string Model { get; }

    public GgufTokenType TypeOf(int id) => (uint)id < (uint)_types.Length ? _types[id] : GgufTokenType.Undefined;
    public int? TokenToId(string token) => _ids.TryGetValue(token, out int id) ? id : null;
    public string? IdToToken(int id) => (uint)id < (uint)_tokens.Length ? _tokens[id] : null;
    public bool IsSpecial(int id) => TypeOf(id) == GgufTokenType.Control;
    private protected bool TryId(string text, out int id) => _ids.TryGetValue(text, out id);

    /// <summary>Loads the tokenizer of a GGUF file (the first part of a split file holds it).</summary>
    public static GgufTokenizer Load(string path)
    {
        using var f = GgufMappedFile.Open(path);
        return FromMetadata(f);
    }

    public static GgufTokenizer FromMetadata(GgufMappedFile f)
    {
        string path = f.Path;
        string model = f.Get("tokenizer.ggml.model")?.Value as string
                       ?? throw new CheckpointFormatException(path, null, "no tokenizer.ggml.model in the metadata (the file carries no tokenizer)");
        if (f.Get("tokenizer.ggml.tokens")?.Value is not string[] tokens || tokens.Length == 0)
            throw new CheckpointFormatException(path, null, "tokenizer.ggml.tokens is missing or not a string array");
        var types = new GgufTokenType[tokens.Length];
        Array.Fill(types, GgufTokenType.Normal);
        if (f.Get("tokenizer.ggml.token_type") is { } tt)
        {
            var list = ((System.Collections.IEnumerable)tt.Value).Cast<object>().Select(o => Convert.ToInt32(o, System.Globalization.CultureInfo.InvariantCulture)).ToArray();
            if (list.Length != tokens.Length)
                throw new CheckpointFormatException(path, null, $"tokenizer.ggml.token_type has {list.Length} entries for {tokens.Length} tokens");
            for (int i = 0; i < list.Length; i++) types[i] = (GgufTokenType)list[i];
        }
        return model switch
        {
            "gpt2" => new GgufBpeTokenizer(f, tokens, types),
            "llama" => new GgufSpmTokenizer(f, tokens, types),
            _ => throw new CheckpointFormatException(path, null, $"tokenizer.ggml.model '{model}' is not supported (gpt2: byte-level BPE, llama: SentencePiece)"),
        };
    }

    public int[] Encode(string text, bool parseSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length / 3 + 4);
        bool afterSpecial = true; // the first fragment counts as following a special token (SentencePiece's space prefix)
        int start = 0, i = 0;
        while (i < text.Length)
        {
            var match = MatchSpecial(text, i, parseSpecialTokens);
            if (match is null)
            {
                i++;
                continue;
            }
            if (i > start)
            {
                EncodeFragment(text[start..i], afterSpecial, ids);
            }
            ids.Add(match.Value.Id);
            afterSpecial = true;
            i += match.Value.Text.Length;
            start = i;
        }
        if (start < text.Length) EncodeFragment(text[start..], afterSpecial, ids);
        return ids.ToArray();
    }

    private (string Text, int Id, bool Special)? MatchSpecial(string text, int i, bool parseSpecial)
    {
        if (!_specialsByFirstChar.TryGetValue(text[i], out var candidates)) return null;
        var rest = text.AsSpan(i);
        foreach (var c in candidates)
            if ((parseSpecial || !c.Special) && rest.StartsWith(c.Text, StringComparison.Ordinal))
                return c;
        return null;
    }

    /// <summary>Encodes text that holds no special token; <paramref name="afterSpecial"/>: it starts the text or
    /// follows a special token.</summary>
    private protected abstract void EncodeFragment(string fragment, bool afterSpecial, List<int> ids);

    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = false)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var bytes = new List<byte>();
        foreach (int id in ids) AppendTokenBytes(id, skipSpecialTokens, bytes);
        return Encoding.UTF8.GetString(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(bytes));
    }

    public void AppendTokenBytes(int id, bool skipSpecialTokens, List<byte> output)
    {
        if ((uint)id >= (uint)_tokens.Length) return;
        switch (_types[id])
        {
            case GgufTokenType.Control:
                if (!skipSpecialTokens) output.AddRange(Encoding.UTF8.GetBytes(_tokens[id]));
                return;
            case GgufTokenType.UserDefined:
                output.AddRange(Encoding.UTF8.GetBytes(_tokens[id]));
                return;
            default:
                AppendModelTokenBytes(id, _tokens[id], _types[id], output);
                return;
        }
    }

    private protected abstract void AppendModelTokenBytes(int id, string token, GgufTokenType type, List<byte> output);
}

/// <summary>Byte-level BPE (<c>tokenizer.ggml.model = gpt2</c>) with llama.cpp's pre-tokenizers.</summary>
public sealed class GgufBpeTokenizer : GgufTokenizer
{
    private readonly Dictionary<(string, string), int> _ranks = new();
    private readonly Regex[] _pre;
    private readonly bool _ignoreMerges;

    /// <summary>
    /// llama.cpp's pre-tokenizer regexes by <c>tokenizer.ggml.pre</c> (llama-vocab.cpp). Several regexes apply in turn,
    /// each splitting the pieces of the one before into its matches and the text between them.
    /// </summary>
    public static IReadOnlyDictionary<string, string[]> PreTokenizers { get; } = BuildPreTokenizers();

    private static Dictionary<string, string[]> BuildPreTokenizers()
    {
        const string gpt2 = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
        const string llama3 = @"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
        const string qwen2 = @"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
        string[] @default = [@"[\p{P}\$\+<=>\^~\|]+", gpt2, @"\p{N}+", "[0-9][0-9][0-9]"];
        return new Dictionary<string, string[]>(StringComparer.Ordinal)
        {
            ["default"] = @default,
            ["gpt-2"] = [gpt2],
            ["gpt2"] = [gpt2],
            ["olmo"] = [gpt2],
            ["mpt"] = [gpt2],
            ["llama3"] = [llama3],
            ["llama-v3"] = [llama3],
            ["llama-bpe"] = [llama3],
            ["smaug-bpe"] = [llama3],
            ["dbrx"] = [llama3],
            ["qwen2"] = [qwen2],
            ["qwen2.5"] = [qwen2],
            ["deepseek-r1-qwen"] = [qwen2],
            ["stablelm2"] = [qwen2],
        };
    }

    internal GgufBpeTokenizer(GgufMappedFile f, string[] tokens, GgufTokenType[] types) : base(f.Path, tokens, types, f)
    {
        string pre = f.Get("tokenizer.ggml.pre")?.Value as string ?? "default";
        if (!PreTokenizers.TryGetValue(pre, out var patterns))
            throw new CheckpointFormatException(f.Path, null,
                $"tokenizer.ggml.pre '{pre}' is not a pre-tokenizer this server knows ({string.Join(", ", PreTokenizers.Keys)})");
        PreTokenizer = pre;
        _pre = patterns.Select(p => new Regex(p, RegexOptions.CultureInvariant | RegexOptions.Compiled)).ToArray();
        _ignoreMerges = pre is "llama3" or "llama-v3" or "llama-bpe" or "smaug-bpe" or "dbrx";
        if (f.Get("tokenizer.ggml.merges")?.Value is not string[] merges)
            throw new CheckpointFormatException(f.Path, null, "tokenizer.ggml.merges is missing (a gpt2 tokenizer needs its merges)");
        for (int i = 0; i < merges.Length; i++)
        {
            int sp = merges[i].IndexOf(' ', 1);
            if (sp < 0) throw new CheckpointFormatException(f.Path, null, $"tokenizer.ggml.merges[{i}] '{merges[i]}' is not 'a b'");
            _ranks.TryAdd((merges[i][..sp], merges[i][(sp + 1)..]), i);
        }
        AddBosToken = f.Get("tokenizer.ggml.add_bos_token")?.Value as bool? ?? false;
        AddEosToken = f.Get("tokenizer.ggml.add_eos_token")?.Value as bool? ?? false;
    }

    public override string Model => "gpt2";
    /// <summary><c>tokenizer.ggml.pre</c>.</summary>
    public string PreTokenizer { get; }

    /// <summary>The pieces the pre-tokenizer cuts text into (each regex splits the previous pieces into matches and gaps).</summary>
    public IReadOnlyList<string> PreTokenize(string text)
    {
        var pieces = new List<string> { text };
        foreach (var re in _pre)
        {
            var next = new List<string>(pieces.Count * 2);
            foreach (var piece in pieces)
            {
                int at = 0;
                foreach (ValueMatch m in re.EnumerateMatches(piece))
                {
                    if (m.Length == 0) continue;
                    if (m.Index > at) next.Add(piece[at..m.Index]);
                    next.Add(piece.Substring(m.Index, m.Length));
                    at = m.Index + m.Length;
                }
                if (at < piece.Length) next.Add(piece[at..]);
            }
            pieces = next;
        }
        return pieces;
    }

    private protected override void EncodeFragment(string fragment, bool afterSpecial, List<int> ids)
    {
        foreach (string piece in PreTokenize(fragment))
        {
            string word = ByteLevel.Encode(piece);
            if (_ignoreMerges && TryId(word, out int whole))
            {
                ids.Add(whole);
                continue;
            }
            // Symbols are byte-level characters; merge the lowest-ranked adjacent pair (leftmost on ties) until none is left.
            // A long word (one a client can make as long as its body) merges with a heap: rescanning is quadratic.
            var symbols = word.Length > BpeMerger.LongPiece ? BpeMerger.MergeByRank(word, _ranks) : word.Select(c => c.ToString()).ToList();
            while (word.Length <= BpeMerger.LongPiece && symbols.Count > 1)
            {
                int best = -1, bestRank = int.MaxValue;
                for (int i = 0; i + 1 < symbols.Count; i++)
                    if (_ranks.TryGetValue((symbols[i], symbols[i + 1]), out int r) && r < bestRank)
                    {
                        bestRank = r;
                        best = i;
                    }
                if (best < 0) break;
                symbols[best] += symbols[best + 1];
                symbols.RemoveAt(best + 1);
            }
            foreach (string s in symbols)
            {
                if (TryId(s, out int id))
                {
                    ids.Add(id);
                    continue;
                }
                foreach (char c in s) // as llama.cpp: a symbol outside the vocabulary goes out byte by byte
                    if (TryId(c.ToString(), out int b)) ids.Add(b);
            }
        }
    }

    private protected override void AppendModelTokenBytes(int id, string token, GgufTokenType type, List<byte> output)
    {
        if (type == GgufTokenType.Unused) return;
        ByteLevel.AppendTokenBytes(token, output);
    }
}

/// <summary>
/// SentencePiece BPE (<c>tokenizer.ggml.model = llama</c>): spaces become ▁ (and, with add_space_prefix, a ▁ starts the
/// text and every fragment after a special token); adjacent symbols (characters at first) merge while their
/// concatenation is a token, highest score first (leftmost on ties); a symbol that is no token is written as its
/// UTF-8 bytes' <c>&lt;0xNN&gt;</c> tokens (or unk).
/// </summary>
public sealed class GgufSpmTokenizer : GgufTokenizer
{
    private readonly float[] _scores;
    private readonly int?[] _byteIds = new int?[256];
    private readonly bool _addSpacePrefix;

    internal GgufSpmTokenizer(GgufMappedFile f, string[] tokens, GgufTokenType[] types) : base(f.Path, tokens, types, f)
    {
        _scores = f.Get("tokenizer.ggml.scores")?.Value as float[]
                  ?? throw new CheckpointFormatException(f.Path, null, "tokenizer.ggml.scores is missing (a SentencePiece tokenizer merges by score)");
        if (_scores.Length != tokens.Length)
            throw new CheckpointFormatException(f.Path, null, $"tokenizer.ggml.scores has {_scores.Length} entries for {tokens.Length} tokens");
        for (int b = 0; b < 256; b++)
            if (TryId($"<0x{b:X2}>", out int id)) _byteIds[b] = id;
        _addSpacePrefix = f.Get("tokenizer.ggml.add_space_prefix")?.Value as bool? ?? true;
        AddBosToken = f.Get("tokenizer.ggml.add_bos_token")?.Value as bool? ?? true;
        AddEosToken = f.Get("tokenizer.ggml.add_eos_token")?.Value as bool? ?? false;
    }

    public override string Model => "llama";

    private protected override void EncodeFragment(string fragment, bool afterSpecial, List<int> ids)
    {
        string text = (_addSpacePrefix && afterSpecial ? " " + fragment : fragment).Replace(' ', '\u2581');
        // Symbols: (start, length) in chars, one code point each at first; linked list by prev/next.
        var start = new List<int>();
        var length = new List<int>();
        for (int i = 0; i < text.Length;)
        {
            int n = char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]) ? 2 : 1;
            start.Add(i);
            length.Add(n);
            i += n;
        }
        int count = start.Count;
        var prev = Enumerable.Range(-1, count).ToArray();
        var next = Enumerable.Range(1, count).Select(x => x == count ? -1 : x).ToArray();
        var queue = new PriorityQueue<(int Left, int Right, int Size), (float NegScore, int Left)>();
        var revMerge = new Dictionary<string, (int Left, int Right)>(StringComparer.Ordinal);
        void TryAdd(int left, int right)
        {
            if (left < 0 || right < 0) return;
            string s = text.Substring(start[left], length[left] + length[right]);
            if (!TryId(s, out int id)) return;
            queue.Enqueue((left, right, s.Length), (-_scores[id], left));
            revMerge[s] = (left, right);
        }
        for (int i = 1; i < count; i++) TryAdd(i - 1, i);
        while (queue.TryDequeue(out var bigram, out _))
        {
            int l = bigram.Left, r = bigram.Right;
            if (length[l] == 0 || length[r] == 0 || length[l] + length[r] != bigram.Size) continue;
            length[l] += length[r];
            length[r] = 0;
            next[l] = next[r];
            if (next[r] >= 0) prev[next[r]] = l;
            TryAdd(prev[l], l);
            TryAdd(l, next[l]);
        }
        void Resegment(int sym, int len)
        {
            string s = text.Substring(start[sym], len);
            if (TryId(s, out int id))
            {
                ids.Add(id);
                return;
            }
            if (revMerge.TryGetValue(s, out var parts) && parts.Left == sym)
            {
                Resegment(parts.Left, start[parts.Right] - start[parts.Left]);
                Resegment(parts.Right, len - (start[parts.Right] - start[parts.Left]));
                return;
            }
            foreach (byte b in Encoding.UTF8.GetBytes(s))
                if (_byteIds[b] is { } bt) ids.Add(bt);
                else if (UnknownId is { } unk) ids.Add(unk);
        }
        for (int i = count > 0 ? 0 : -1; i != -1; i = next[i])
            if (length[i] > 0) Resegment(i, length[i]);
    }

    private protected override void AppendModelTokenBytes(int id, string token, GgufTokenType type, List<byte> output)
    {
        switch (type)
        {
            case GgufTokenType.Byte when token.Length == 6 && byte.TryParse(token.AsSpan(3, 2), System.Globalization.NumberStyles.HexNumber, null, out byte b):
                output.Add(b);
                return;
            case GgufTokenType.Unused:
                return;
            case GgufTokenType.Unknown:
                output.AddRange(Encoding.UTF8.GetBytes("\u2585")); // llama.cpp writes ▅ for unk
                return;
            default:
                output.AddRange(Encoding.UTF8.GetBytes(token.Replace('\u2581', ' ')));
                return;
        }
    }
}
