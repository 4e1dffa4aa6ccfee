using System.Text.Encodings.Web;
using System.Text.Json;

namespace MoeServer.Kernels.Tokenization;

/// <summary>
/// Writes a trained <see cref="BpeModel"/> as an HF <c>tokenizer.json</c> (byte-level BPE, the layout
/// the HF <c>tokenizers</c> library loads) and, optionally, a matching <c>tokenizer_config.json</c>.
/// </summary>
public static class TokenizerJsonWriter
{
    private static readonly JsonWriterOptions WriterOptions = new()
    {
        Indented = true,
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    /// <summary>Writes <c>tokenizer.json</c> into <paramref name="directory"/> (created if needed); returns the file path.</summary>
    /// <param name="model">The trained model.</param>
    /// <param name="directory">Target directory.</param>
    /// <param name="legacyStringMerges">
    /// Write merges as <c>"a b"</c> strings (readable by every HF tokenizers release) instead of
    /// <c>["a", "b"]</c> arrays (tokenizers 0.20+).
    /// </param>
    public static string WriteToDirectory(BpeModel model, string directory, bool legacyStringMerges = false)
    {
        Directory.CreateDirectory(directory);
        string path = Path.Combine(directory, "tokenizer.json");
        Write(model, path, legacyStringMerges);
        return path;
    }

    /// <summary>Writes the tokenizer.json document to <paramref name="path"/>.</summary>
    public static void Write(BpeModel model, string path, bool legacyStringMerges = false)
    {
        using FileStream fs = File.Create(path);
        Write(model, fs, legacyStringMerges);
    }

    /// <summary>Writes the tokenizer.json document to a stream.</summary>
    public static void Write(BpeModel model, Stream stream, bool legacyStringMerges = false)
    {
        ArgumentNullException.ThrowIfNull(model);
        using var w = new Utf8JsonWriter(stream, WriterOptions);
        w.WriteStartObject();
        w.WriteString("version", "1.0");
        w.WriteNull("truncation");
        w.WriteNull("padding");

        w.WriteStartArray("added_tokens");
        foreach (AddedToken t in model.AddedTokens.OrderBy(t => t.Id))
        {
            w.WriteStartObject();
            w.WriteNumber("id", t.Id);
            w.WriteString("content", t.Content);
            w.WriteBoolean("single_word", t.SingleWord);
            w.WriteBoolean("lstrip", t.LStrip);
            w.WriteBoolean("rstrip", t.RStrip);
            w.WriteBoolean("normalized", t.Normalized);
            w.WriteBoolean("special", t.Special);
            w.WriteEndObject();
        }

        w.WriteEndArray();

        w.WriteNull("normalizer");
        WriteByteLevel(w, "pre_tokenizer", addPrefixSpace: false, trimOffsets: true);
        WriteByteLevel(w, "post_processor", addPrefixSpace: true, trimOffsets: false);
        WriteByteLevel(w, "decoder", addPrefixSpace: true, trimOffsets: true);

        w.WriteStartObject("model");
        w.WriteString("type", "BPE");
        w.WriteNull("dropout");
        w.WriteNull("unk_token");
        w.WriteNull("continuing_subword_prefix");
        w.WriteNull("end_of_word_suffix");
        w.WriteBoolean("fuse_unk", false);
        w.WriteBoolean("byte_fallback", false);
        w.WriteBoolean("ignore_merges", false);
        w.WriteStartObject("vocab");
        foreach (var (token, id) in model.Vocab.OrderBy(kv => kv.Value))
        {
            w.WriteNumber(token, id);
        }

        w.WriteEndObject();
        w.WriteStartArray("merges");
        foreach (var (left, right) in model.Merges)
        {
            if (legacyStringMerges)
            {
                w.WriteStringValue(left + " " + right);
                continue;
            }

            w.WriteStartArray();
            w.WriteStringValue(left);
            w.WriteStringValue(right);
            w.WriteEndArray();
        }

        w.WriteEndArray();
        w.WriteEndObject();

        w.WriteEndObject();
        w.Flush();
    }

    /// <summary>
    /// Writes a <c>tokenizer_config.json</c> (transformers' PreTrainedTokenizerFast settings) into
    /// <paramref name="directory"/>; returns the file path. Tokens that are null are written as null.
    /// </summary>
    public static string WriteTokenizerConfig(
        string directory,
        BpeModel model,
        string? bosToken,
        string? eosToken,
        string? chatTemplate,
        string? padToken = null,
        int modelMaxLength = 4096)
    {
        ArgumentNullException.ThrowIfNull(model);
        Directory.CreateDirectory(directory);
        string path = Path.Combine(directory, "tokenizer_config.json");
        using FileStream fs = File.Create(path);
        using var w = new Utf8JsonWriter(fs, WriterOptions);
        w.WriteStartObject();
        w.WriteBoolean("add_bos_token", false);
        w.WriteBoolean("add_eos_token", false);
        w.WriteStartObject("added_tokens_decoder");
        foreach (AddedToken t in model.AddedTokens.OrderBy(t => t.Id))
        {
            w.WriteStartObject(t.Id.ToString(System.Globalization.CultureInfo.InvariantCulture));
            w.WriteString("content", t.Content);
            w.WriteBoolean("lstrip", t.LStrip);
            w.WriteBoolean("normalized", t.Normalized);
            w.WriteBoolean("rstrip", t.RStrip);
            w.WriteBoolean("single_word", t.SingleWord);
            w.WriteBoolean("special", t.Special);
            w.WriteEndObject();
        }

        w.WriteEndObject();
        WriteNullableString(w, "bos_token", bosToken);
        WriteNullableString(w, "eos_token", eosToken);
        WriteNullableString(w, "pad_token", padToken);
        w.WriteNull("unk_token");
        if (chatTemplate is not null)
        {
            w.WriteString("chat_template", chatTemplate);
        }

        w.WriteBoolean("clean_up_tokenization_spaces", false);
        w.WriteNumber("model_max_length", modelMaxLength);
        w.WriteString("tokenizer_class", "PreTrainedTokenizerFast");
        w.WriteEndObject();
        w.Flush();
        return path;
    }

    private static void WriteNullableString(Utf8JsonWriter w, string name, string? value)
    {
        if (value is null)
        {
            w.WriteNull(name);
        }
        else
        {
            w.WriteString(name, value);
        }
    }

    private static void WriteByteLevel(Utf8JsonWriter w, string name, bool addPrefixSpace, bool trimOffsets)
    {
        w.WriteStartObject(name);
        w.WriteString("type", "ByteLevel");
        w.WriteBoolean("add_prefix_space", addPrefixSpace);
        w.WriteBoolean("trim_offsets", trimOffsets);
        w.WriteBoolean("use_regex", true);
        w.WriteEndObject();
    }
}
