using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace MoeServer.Kernels.Tokenization;

/// <summary>
/// A byte-level BPE tokenizer loaded from an HF <c>tokenizer.json</c> (plus, when present,
/// <c>tokenizer_config.json</c> for the bos/eos tokens). Added tokens are matched in the text first
/// (leftmost-longest); the rest is pre-tokenized with the ByteLevel regex and encoded with
/// Microsoft.ML.Tokenizers' <see cref="BpeTokenizer"/>. Decoding follows the HF ByteLevel decoder.
/// </summary>
/// <remarks>
/// Supported: model type BPE with byte-level pre-tokenization (ByteLevel, or a Split regex followed by
/// ByteLevel without regex, as Qwen2 uses), normalizer null or NFC, both merges forms ("a b" and
/// ["a","b"]). Encode adds no bos/eos (no post-processing): chat templates put them in the text.
/// </remarks>
public sealed class HfTokenizer : ITokenizer
{
    /// <summary>File name of the tokenizer definition.</summary>
    public const string TokenizerFileName = "tokenizer.json";

    /// <summary>File name of the transformers tokenizer settings.</summary>
    public const string ConfigFileName = "tokenizer_config.json";

    private readonly BpeTokenizer _bpe;
    private readonly Dictionary<string, int> _vocab;
    private readonly string?[] _idToToken;
    private readonly AddedToken?[] _addedById;
    private readonly Dictionary<string, AddedToken> _addedByContent;
    private readonly Dictionary<char, AddedToken[]> _addedByFirstChar;
    private readonly bool _addPrefixSpace;
    private readonly bool _nfc;
    private readonly bool _ignoreMerges;
    private readonly Regex _preTokenizer;
    private readonly BpeMerger _longPieces;

    private HfTokenizer(
        BpeTokenizer bpe,
        Dictionary<string, int> vocab,
        IReadOnlyList<string> merges,
        List<AddedToken> added,
        Regex preTokenizer,
        bool addPrefixSpace,
        bool nfc,
        bool ignoreMerges)
    {
        _bpe = bpe;
        _vocab = vocab;
        _longPieces = new BpeMerger(vocab, merges);
        _preTokenizer = preTokenizer;
        _addPrefixSpace = addPrefixSpace;
        _nfc = nfc;
        _ignoreMerges = ignoreMerges;

        int size = 0;
        foreach (int id in vocab.Values)
        {
            size = Math.Max(size, id + 1);
        }

        foreach (AddedToken t in added)
        {
            size = Math.Max(size, t.Id + 1);
        }

        VocabSize = size;
        _idToToken = new string?[size];
        _addedById = new AddedToken?[size];
        foreach (var (token, id) in vocab)
        {
            _idToToken[id] = token;
        }

        _addedByContent = new Dictionary<string, AddedToken>(StringComparer.Ordinal);
        foreach (AddedToken t in added)
        {
            _idToToken[t.Id] = t.Content;
            _addedById[t.Id] = t;
            _addedByContent[t.Content] = t;
        }

        _addedByFirstChar = added
            .Where(t => t.Content.Length > 0)
            .GroupBy(t => t.Content[0])
            .ToDictionary(g => g.Key, g => g.OrderByDescending(t => t.Content.Length).ToArray());
        AddedTokens = added;
    }

    /// <summary>Highest id + 1 (model vocabulary and added tokens).</summary>
    public int VocabSize { get; }

    /// <summary>The added tokens, as listed in tokenizer.json.</summary>
    public IReadOnlyList<AddedToken> AddedTokens { get; }

    /// <summary>The bos token text from tokenizer_config.json, if any.</summary>
    public string? BosToken { get; private set; }

    /// <summary>The eos token text from tokenizer_config.json, if any.</summary>
    public string? EosToken { get; private set; }

    /// <summary>The bos token id, if tokenizer_config.json names one that is in the vocabulary.</summary>
    public int? BosId => BosToken is null ? null : TokenToId(BosToken);

    /// <summary>The eos token id, if tokenizer_config.json names one that is in the vocabulary.</summary>
    public int? EosId => EosToken is null ? null : TokenToId(EosToken);

    /// <summary>False: HF chat templates and prompts carry bos in their text.</summary>
    public bool AddBosToken => false;

    /// <summary>Loads <c>tokenizer.json</c> (required) and <c>tokenizer_config.json</c> (optional) from a directory.</summary>
    /// <exception cref="FileNotFoundException">tokenizer.json is missing (the message names the path).</exception>
    /// <exception cref="InvalidDataException">A file is not valid JSON or lacks required fields (the message names the file).</exception>
    /// <exception cref="NotSupportedException">The model or pipeline is not byte-level BPE (the message names the file).</exception>
    public static HfTokenizer Load(string directory)
    {
        ArgumentNullException.ThrowIfNull(directory);
        string path = Path.Combine(directory, TokenizerFileName);
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"Tokenizer file not found: {Path.GetFullPath(path)}", path);
        }

        string configPath = Path.Combine(directory, ConfigFileName);
        string? config = File.Exists(configPath) ? File.ReadAllText(configPath) : null;
        return FromJson(File.ReadAllText(path), Path.GetFullPath(path), config, Path.GetFullPath(configPath));
    }

    /// <summary>Builds a tokenizer from tokenizer.json text; <paramref name="sourceName"/> is used in error messages.</summary>
    public static HfTokenizer FromJson(
        string tokenizerJson,
        string sourceName = TokenizerFileName,
        string? configJson = null,
        string configSourceName = ConfigFileName)
    {
        ArgumentNullException.ThrowIfNull(tokenizerJson);
        HfTokenizer tokenizer;
        try
        {
            using JsonDocument doc = JsonDocument.Parse(tokenizerJson, new JsonDocumentOptions { AllowTrailingCommas = true });
            tokenizer = Build(doc.RootElement, sourceName);
        }
        catch (JsonException ex)
        {
            throw new InvalidDataException($"{sourceName}: invalid JSON: {ex.Message}", ex);
        }

        if (configJson is not null)
        {
            try
            {
                using JsonDocument cfg = JsonDocument.Parse(configJson, new JsonDocumentOptions { AllowTrailingCommas = true });
                if (cfg.RootElement.ValueKind != JsonValueKind.Object)
                {
                    throw new InvalidDataException($"{configSourceName}: expected a JSON object.");
                }

                tokenizer.BosToken = ReadTokenSetting(cfg.RootElement, "bos_token");
                tokenizer.EosToken = ReadTokenSetting(cfg.RootElement, "eos_token");
            }
            catch (JsonException ex)
            {
                throw new InvalidDataException($"{configSourceName}: invalid JSON: {ex.Message}", ex);
            }
        }

        return tokenizer;
    }

    /// <summary>Builds a tokenizer directly from a trained model (same as writing and loading its tokenizer.json).</summary>
    public static HfTokenizer FromModel(BpeModel model, string? bosToken = null, string? eosToken = null)
    {
        using var ms = new MemoryStream();
        TokenizerJsonWriter.Write(model, ms);
        HfTokenizer t = FromJson(Encoding.UTF8.GetString(ms.ToArray()), "(in-memory tokenizer.json)");
        t.BosToken = bosToken;
        t.EosToken = eosToken;
        return t;
    }

    /// <summary>The id of a token (added token text or byte-level vocabulary string), or null.</summary>
    public int? TokenToId(string token)
    {
        ArgumentNullException.ThrowIfNull(token);
        if (_addedByContent.TryGetValue(token, out AddedToken? a))
        {
            return a.Id;
        }

        return _vocab.TryGetValue(token, out int id) ? id : null;
    }

    /// <summary>The token string of an id (byte-level characters for vocabulary tokens), or null.</summary>
    public string? IdToToken(int id) => (uint)id < (uint)_idToToken.Length ? _idToToken[id] : null;

    /// <summary>Whether the id is an added token marked special.</summary>
    public bool IsSpecial(int id) => (uint)id < (uint)_addedById.Length && _addedById[id] is { Special: true };

    /// <summary>
    /// Encodes text. Added tokens found in the text become their ids; with
    /// <paramref name="parseSpecialTokens"/> false, special ones are encoded as plain text instead.
    /// </summary>
    public int[] Encode(string text, bool parseSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length / 3 + 4);
        int segmentStart = 0;
        int i = 0;
        while (i < text.Length)
        {
            AddedToken? match = MatchAt(text, i, parseSpecialTokens);
            if (match is null)
            {
                i++;
                continue;
            }

            int segmentEnd = i;
            if (match.LStrip)
            {
                while (segmentEnd > segmentStart && char.IsWhiteSpace(text[segmentEnd - 1]))
                {
                    segmentEnd--;
                }
            }

            EncodeSegment(text.AsSpan(segmentStart, segmentEnd - segmentStart), ids);
            ids.Add(match.Id);
            i += match.Content.Length;
            if (match.RStrip)
            {
                while (i < text.Length && char.IsWhiteSpace(text[i]))
                {
                    i++;
                }
            }

            segmentStart = i;
        }

        EncodeSegment(text.AsSpan(segmentStart), ids);
        return ids.ToArray();
    }

    /// <summary>
    /// Decodes ids to text as the HF ByteLevel decoder does (bytes joined, then UTF-8 decoded with
    /// U+FFFD for invalid sequences). Unknown ids are skipped.
    /// </summary>
    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = false)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var bytes = new List<byte>();
        foreach (int id in ids)
        {
            AppendTokenBytes(id, skipSpecialTokens, bytes);
        }

        return Encoding.UTF8.GetString(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(bytes));
    }

    /// <summary>Appends the bytes one id decodes to (nothing for unknown ids or skipped specials).</summary>
    public void AppendTokenBytes(int id, bool skipSpecialTokens, List<byte> output)
    {
        if ((uint)id >= (uint)_idToToken.Length)
        {
            return;
        }

        AddedToken? added = _addedById[id];
        if (added is not null && added.Special && skipSpecialTokens)
        {
            return;
        }

        string? token = _idToToken[id];
        if (token is not null)
        {
            ByteLevel.AppendTokenBytes(token, output);
        }
    }

    private AddedToken? MatchAt(string text, int i, bool includeSpecial)
    {
        if (!_addedByFirstChar.TryGetValue(text[i], out AddedToken[]? candidates))
        {
            return null;
        }

        ReadOnlySpan<char> rest = text.AsSpan(i);
        foreach (AddedToken t in candidates)
        {
            if ((includeSpecial || !t.Special) && rest.StartsWith(t.Content, StringComparison.Ordinal))
            {
                return t;
            }
        }

        return null;
    }

    private void EncodeSegment(ReadOnlySpan<char> segment, List<int> ids)
    {
        if (segment.IsEmpty)
        {
            return;
        }

        string text = segment.ToString();
        if (_nfc)
        {
            text = text.Normalize(NormalizationForm.FormC);
        }

        if (_addPrefixSpace && !text.StartsWith(' '))
        {
            text = " " + text;
        }

        if (!_ignoreMerges && !HasLongPiece(text))
        {
            ids.AddRange(_bpe.EncodeToIds(text, considerPreTokenization: true, considerNormalization: false));
            return;
        }

        foreach (ValueMatch m in _preTokenizer.EnumerateMatches(text))
        {
            string piece = text.Substring(m.Index, m.Length);
            if (_ignoreMerges && _vocab.TryGetValue(ByteLevel.Encode(piece), out int whole))
            {
                ids.Add(whole);
            }
            else if (piece.Length > BpeMerger.LongPiece)
            {
                _longPieces.Encode(ByteLevel.Encode(piece), ids); // linear-ish where Microsoft.ML.Tokenizers is quadratic
            }
            else
            {
                ids.AddRange(_bpe.EncodeToIds(piece, considerPreTokenization: false, considerNormalization: false));
            }
        }
    }

    private bool HasLongPiece(string text)
    {
        if (text.Length <= BpeMerger.LongPiece)
        {
            return false;
        }

        foreach (ValueMatch m in _preTokenizer.EnumerateMatches(text))
        {
            if (m.Length > BpeMerger.LongPiece)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>A token setting of tokenizer_config.json: a plain string or an AddedToken object's content.</summary>
    internal static string? ReadTokenSetting(JsonElement root, string name)
    {
        if (!root.TryGetProperty(name, out JsonElement v))
        {
            return null;
        }

        return v.ValueKind switch
        {
            JsonValueKind.String => v.GetString(),
            JsonValueKind.Object when v.TryGetProperty("content", out JsonElement c) && c.ValueKind == JsonValueKind.String => c.GetString(),
            _ => null,
        };
    }

    private static HfTokenizer Build(JsonElement root, string source)
    {
        if (root.ValueKind != JsonValueKind.Object)
        {
            throw new InvalidDataException($"{source}: expected a JSON object at the top level.");
        }

        if (!root.TryGetProperty("model", out JsonElement model) || model.ValueKind != JsonValueKind.Object)
        {
            throw new InvalidDataException($"{source}: missing \"model\" object.");
        }

        string? type = model.TryGetProperty("type", out JsonElement typeEl) && typeEl.ValueKind == JsonValueKind.String
            ? typeEl.GetString()
            : null;
        if (type is null && !model.TryGetProperty("merges", out _))
        {
            throw new NotSupportedException($"{source}: model has no \"type\" and no merges; only BPE models are supported.");
        }

        if (type is not null && type != "BPE")
        {
            throw new NotSupportedException($"{source}: model type '{type}' is not supported; only byte-level BPE is.");
        }

        if (GetBool(model, "byte_fallback"))
        {
            throw new NotSupportedException($"{source}: BPE with byte_fallback (SentencePiece-style) is not supported; only byte-level BPE is.");
        }

        if (GetString(model, "continuing_subword_prefix") is { Length: > 0 } || GetString(model, "end_of_word_suffix") is { Length: > 0 })
        {
            throw new NotSupportedException($"{source}: BPE with continuing_subword_prefix/end_of_word_suffix is not supported.");
        }

        bool ignoreMerges = GetBool(model, "ignore_merges");

        if (!model.TryGetProperty("vocab", out JsonElement vocabEl) || vocabEl.ValueKind != JsonValueKind.Object)
        {
            throw new InvalidDataException($"{source}: model.vocab must be an object of token → id.");
        }

        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (JsonProperty p in vocabEl.EnumerateObject())
        {
            if (p.Value.ValueKind != JsonValueKind.Number || !p.Value.TryGetInt32(out int id) || id < 0)
            {
                throw new InvalidDataException($"{source}: model.vocab entry '{p.Name}' has no valid id.");
            }

            vocab[p.Name] = id;
        }

        var merges = new List<string>();
        if (model.TryGetProperty("merges", out JsonElement mergesEl) && mergesEl.ValueKind != JsonValueKind.Null)
        {
            if (mergesEl.ValueKind != JsonValueKind.Array)
            {
                throw new InvalidDataException($"{source}: model.merges must be an array.");
            }

            int n = 0;
            foreach (JsonElement m in mergesEl.EnumerateArray())
            {
                merges.Add(ReadMerge(m, n, source));
                n++;
            }
        }

        var added = new List<AddedToken>();
        if (root.TryGetProperty("added_tokens", out JsonElement addedEl) && addedEl.ValueKind == JsonValueKind.Array)
        {
            foreach (JsonElement t in addedEl.EnumerateArray())
            {
                if (!t.TryGetProperty("id", out JsonElement idEl) || !idEl.TryGetInt32(out int id)
                    || GetString(t, "content") is not { Length: > 0 } content)
                {
                    throw new InvalidDataException($"{source}: every added_tokens entry needs an id and a non-empty content.");
                }

                added.Add(new AddedToken(
                    id,
                    content,
                    GetBool(t, "special"),
                    GetBool(t, "lstrip"),
                    GetBool(t, "rstrip"),
                    GetBool(t, "normalized"),
                    GetBool(t, "single_word")));
            }
        }

        bool nfc = ReadNormalizer(root, source);
        var (regex, addPrefixSpace) = ReadPreTokenizer(root, source);
        CheckDecoder(root, source);

        BpeTokenizer bpe;
        try
        {
            bpe = BpeTokenizer.Create(new BpeOptions(vocab)
            {
                Merges = merges,
                ByteLevel = true,
                PreTokenizer = new RegexPreTokenizer(regex, null),
                Normalizer = null,
            });
        }
        catch (Exception ex) when (ex is ArgumentException or InvalidOperationException or FormatException or KeyNotFoundException)
        {
            throw new InvalidDataException($"{source}: the BPE model could not be built: {ex.Message}", ex);
        }

        return new HfTokenizer(bpe, vocab, merges, added, regex, addPrefixSpace, nfc, ignoreMerges);
    }

    private static string ReadMerge(JsonElement m, int index, string source)
    {
        if (m.ValueKind == JsonValueKind.String)
        {
            string s = m.GetString()!;
            string[] parts = s.Split(' ');
            if (parts.Length != 2 || parts[0].Length == 0 || parts[1].Length == 0)
            {
                throw new InvalidDataException($"{source}: model.merges[{index}] \"{s}\" is not of the form \"a b\".");
            }

            return s;
        }

        if (m.ValueKind == JsonValueKind.Array && m.GetArrayLength() == 2
            && m[0].ValueKind == JsonValueKind.String && m[1].ValueKind == JsonValueKind.String)
        {
            string a = m[0].GetString()!;
            string b = m[1].GetString()!;
            if (a.Length == 0 || b.Length == 0)
            {
                throw new InvalidDataException($"{source}: model.merges[{index}] has an empty part.");
            }

            if (a.Contains(' ') || b.Contains(' '))
            {
                throw new NotSupportedException($"{source}: model.merges[{index}] contains a space, which byte-level BPE never produces.");
            }

            return a + " " + b;
        }

        throw new InvalidDataException($"{source}: model.merges[{index}] must be \"a b\" or [\"a\", \"b\"].");
    }

    private static bool ReadNormalizer(JsonElement root, string source)
    {
        if (!root.TryGetProperty("normalizer", out JsonElement n) || n.ValueKind == JsonValueKind.Null)
        {
            return false;
        }

        string? type = GetString(n, "type");
        if (type == "NFC")
        {
            return true;
        }

        if (type == "Sequence" && n.TryGetProperty("normalizers", out JsonElement list)
            && list.ValueKind == JsonValueKind.Array && list.GetArrayLength() == 0)
        {
            return false;
        }

        throw new NotSupportedException($"{source}: normalizer '{type}' is not supported (only null or NFC).");
    }

    private static (Regex Regex, bool AddPrefixSpace) ReadPreTokenizer(JsonElement root, string source)
    {
        if (!root.TryGetProperty("pre_tokenizer", out JsonElement p) || p.ValueKind == JsonValueKind.Null)
        {
            throw new NotSupportedException($"{source}: a byte-level pre_tokenizer is required (found none).");
        }

        string? type = GetString(p, "type");
        if (type == "ByteLevel")
        {
            bool useRegex = !p.TryGetProperty("use_regex", out JsonElement ur) || ur.ValueKind != JsonValueKind.False;
            if (!useRegex)
            {
                throw new NotSupportedException($"{source}: ByteLevel pre_tokenizer without regex is not supported on its own.");
            }

            return (ByteLevel.Gpt2Regex, GetBool(p, "add_prefix_space"));
        }

        if (type == "Sequence" && p.TryGetProperty("pretokenizers", out JsonElement seq)
            && seq.ValueKind == JsonValueKind.Array && seq.GetArrayLength() == 2)
        {
            JsonElement split = seq[0];
            JsonElement bl = seq[1];
            if (GetString(split, "type") == "Split" && GetString(bl, "type") == "ByteLevel"
                && bl.TryGetProperty("use_regex", out JsonElement ur) && ur.ValueKind == JsonValueKind.False
                && GetString(split, "behavior") == "Isolated" && !GetBool(split, "invert")
                && split.TryGetProperty("pattern", out JsonElement pat))
            {
                string? pattern = GetString(pat, "Regex");
                string? literal = GetString(pat, "String");
                if (pattern is not null || literal is not null)
                {
                    try
                    {
                        var regex = new Regex(pattern ?? Regex.Escape(literal!), RegexOptions.CultureInvariant | RegexOptions.Compiled);
                        return (regex, GetBool(bl, "add_prefix_space"));
                    }
                    catch (ArgumentException ex)
                    {
                        throw new NotSupportedException($"{source}: pre_tokenizer Split regex is not usable in .NET: {ex.Message}", ex);
                    }
                }
            }
        }

        throw new NotSupportedException(
            $"{source}: pre_tokenizer '{type}' is not supported (ByteLevel, or Sequence[Split(Isolated), ByteLevel(use_regex=false)]).");
    }

    private static void CheckDecoder(JsonElement root, string source)
    {
        if (!root.TryGetProperty("decoder", out JsonElement d) || d.ValueKind == JsonValueKind.Null)
        {
            return;
        }

        string? type = GetString(d, "type");
        if (type != "ByteLevel")
        {
            throw new NotSupportedException($"{source}: decoder '{type}' is not supported (only ByteLevel).");
        }
    }

    private static string? GetString(JsonElement e, string name) =>
        e.ValueKind == JsonValueKind.Object && e.TryGetProperty(name, out JsonElement v) && v.ValueKind == JsonValueKind.String
            ? v.GetString()
            : null;

    private static bool GetBool(JsonElement e, string name) =>
        e.ValueKind == JsonValueKind.Object && e.TryGetProperty(name, out JsonElement v) && v.ValueKind == JsonValueKind.True;
}
