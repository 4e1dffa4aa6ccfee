using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using MoeServer.Kernels.Tokenization;

namespace MoeServer.Kernels.Tests.Tokenization;

public class HfTokenizerTests(TokenizerFixture fx) : IClassFixture<TokenizerFixture>
{
    public static TheoryData<string> SampleTexts() => [.. Samples.Texts];

    [Theory]
    [MemberData(nameof(SampleTexts))]
    public void Encode_then_decode_gives_back_the_text(string text)
    {
        int[] ids = fx.Tokenizer.Encode(text);
        Assert.Equal(text, fx.Tokenizer.Decode(ids));
        Assert.All(ids, id => Assert.InRange(id, 0, fx.Tokenizer.VocabSize - 1));
    }

    [Fact]
    public void Encode_then_decode_gives_back_the_whole_training_corpus()
    {
        Assert.Equal(BuiltInCorpus.Text, fx.Tokenizer.Decode(fx.Tokenizer.Encode(BuiltInCorpus.Text)));
    }

    [Theory]
    [MemberData(nameof(SampleTexts))]
    public void Encode_matches_a_reference_byte_level_bpe(string text)
    {
        Assert.Equal(ReferenceBpe.Encode(fx.Model, text), fx.Tokenizer.Encode(text));
    }

    [Fact]
    public void Encode_matches_a_reference_byte_level_bpe_on_the_corpus()
    {
        foreach (string line in BuiltInCorpus.Text.Split('\n'))
        {
            Assert.Equal(ReferenceBpe.Encode(fx.Model, line), fx.Tokenizer.Encode(line));
        }
    }

    [Fact]
    public void Written_tokenizer_json_has_the_hf_layout()
    {
        JsonNode root = JsonNode.Parse(File.ReadAllText(Path.Combine(fx.Directory, "tokenizer.json")))!;
        Assert.Equal("1.0", (string?)root["version"]);
        Assert.Null(root["normalizer"]);
        Assert.Equal("ByteLevel", (string?)root["pre_tokenizer"]!["type"]);
        Assert.False((bool)root["pre_tokenizer"]!["add_prefix_space"]!);
        Assert.True((bool)root["pre_tokenizer"]!["use_regex"]!);
        Assert.Equal("ByteLevel", (string?)root["decoder"]!["type"]);
        JsonNode model = root["model"]!;
        Assert.Equal("BPE", (string?)model["type"]);
        Assert.False((bool)model["byte_fallback"]!);
        Assert.Equal(1024, model["vocab"]!.AsObject().Count);
        JsonArray firstMerge = model["merges"]![0]!.AsArray();
        Assert.Equal(2, firstMerge.Count);
        JsonArray added = root["added_tokens"]!.AsArray();
        Assert.Equal(TokenizerFixture.Specials.Length, added.Count);
        Assert.Equal("<|endoftext|>", (string?)added[0]!["content"]);
        Assert.True((bool)added[0]!["special"]!);
        Assert.Equal(fx.Model.Vocab["<|endoftext|>"], (int)added[0]!["id"]!);
    }

    [Fact]
    public void Both_merges_forms_load_and_give_the_same_ids()
    {
        string dir = TempDir.Create();
        try
        {
            string path = TokenizerJsonWriter.WriteToDirectory(fx.Model, dir, legacyStringMerges: true);
            JsonNode firstMerge = JsonNode.Parse(File.ReadAllText(path))!["model"]!["merges"]![0]!;
            Assert.Equal(JsonValueKind.String, firstMerge.GetValueKind());
            Assert.Equal($"{fx.Model.Merges[0].Left} {fx.Model.Merges[0].Right}", (string?)firstMerge);

            HfTokenizer legacyTok = HfTokenizer.Load(dir);
            foreach (string text in Samples.Texts.Append(BuiltInCorpus.Text))
            {
                Assert.Equal(fx.Tokenizer.Encode(text), legacyTok.Encode(text));
            }
        }
        finally
        {
            TempDir.Delete(dir);
        }
    }

    [Fact]
    public void Malformed_merges_are_reported_with_the_file_and_index()
    {
        var ex = Assert.Throws<InvalidDataException>(() => HfTokenizer.FromJson(
            """{"pre_tokenizer": {"type": "ByteLevel"}, "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b", "abc"]}}""",
            "/m/tokenizer.json"));
        Assert.Contains("/m/tokenizer.json", ex.Message);
        Assert.Contains("merges[1]", ex.Message);
    }

    [Fact]
    public void Added_tokens_with_lstrip_and_rstrip_swallow_adjacent_whitespace()
    {
        JsonNode root = JsonNode.Parse(File.ReadAllText(Path.Combine(fx.Directory, "tokenizer.json")))!;
        foreach (JsonNode? t in root["added_tokens"]!.AsArray())
        {
            if ((string?)t!["content"] == "[INST]")
            {
                t["lstrip"] = true;
                t["rstrip"] = true;
            }
        }

        HfTokenizer tok = HfTokenizer.FromJson(root.ToJsonString());
        int inst = tok.TokenToId("[INST]")!.Value;
        Assert.Equal([.. tok.Encode("a"), inst, .. tok.Encode("b")], tok.Encode("a   [INST]  \n b"));
    }

    [Fact]
    public void Ignore_merges_models_round_trip()
    {
        JsonNode root = JsonNode.Parse(File.ReadAllText(Path.Combine(fx.Directory, "tokenizer.json")))!;
        root["model"]!["ignore_merges"] = true;
        HfTokenizer tok = HfTokenizer.FromJson(root.ToJsonString());
        foreach (string text in Samples.Texts)
        {
            Assert.Equal(text, tok.Decode(tok.Encode(text)));
        }

        Assert.Equal([tok.TokenToId("Ġthe")!.Value], tok.Encode(" the"));
    }

    [Fact]
    public void Special_tokens_in_text_map_to_their_ids()
    {
        HfTokenizer t = fx.Tokenizer;
        int imStart = t.TokenToId("<|im_start|>")!.Value;
        int imEnd = t.TokenToId("<|im_end|>")!.Value;
        int[] ids = t.Encode("<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n");
        Assert.Equal(imStart, ids[0]);
        Assert.Equal(2, ids.Count(i => i == imStart));
        Assert.Single(ids, imEnd);
        Assert.Equal(t.Encode("user\nHi there"), ids[1..Array.IndexOf(ids, imEnd)]);

        int[] mistral = t.Encode("<s> [INST] Hello [/INST] Hi!</s>");
        Assert.Equal(t.TokenToId("<s>"), mistral[0]);
        Assert.Equal(t.TokenToId("</s>"), mistral[^1]);
        Assert.Contains(t.TokenToId("[INST]")!.Value, mistral);
        Assert.Contains(t.TokenToId("[/INST]")!.Value, mistral);
        Assert.Equal("<s> [INST] Hello [/INST] Hi!</s>", t.Decode(mistral));
    }

    [Fact]
    public void Special_tokens_are_plain_text_when_parsing_is_off_and_can_be_skipped_when_decoding()
    {
        HfTokenizer t = fx.Tokenizer;
        int[] plain = t.Encode("<|im_end|>", parseSpecialTokens: false);
        Assert.True(plain.Length > 1);
        Assert.DoesNotContain(t.TokenToId("<|im_end|>")!.Value, plain);
        Assert.Equal("<|im_end|>", t.Decode(plain));

        int[] ids = t.Encode("<s>Hello</s>");
        Assert.Equal("Hello", t.Decode(ids, skipSpecialTokens: true));
        Assert.True(t.IsSpecial(ids[0]));
        Assert.False(t.IsSpecial(ids[1]));
    }

    [Fact]
    public void Bos_and_eos_come_from_tokenizer_config()
    {
        Assert.Equal("<s>", fx.Tokenizer.BosToken);
        Assert.Equal(fx.Model.Vocab["<s>"], fx.Tokenizer.BosId);
        Assert.Equal(fx.Model.Vocab["</s>"], fx.Tokenizer.EosId);

        string dir = CopyTokenizerJson();
        try
        {
            Assert.Null(HfTokenizer.Load(dir).BosId);
            File.WriteAllText(
                Path.Combine(dir, "tokenizer_config.json"),
                """{"bos_token": {"__type": "AddedToken", "content": "<|endoftext|>"}, "eos_token": "<|im_end|>"}""");
            HfTokenizer t = HfTokenizer.Load(dir);
            Assert.Equal(fx.Model.Vocab["<|endoftext|>"], t.BosId);
            Assert.Equal(fx.Model.Vocab["<|im_end|>"], t.EosId);
        }
        finally
        {
            TempDir.Delete(dir);
        }
    }

    [Fact]
    public void Token_and_id_lookups_agree()
    {
        HfTokenizer t = fx.Tokenizer;
        Assert.Equal(1024, t.VocabSize);
        for (int id = 0; id < t.VocabSize; id++)
        {
            string token = t.IdToToken(id)!;
            Assert.Equal(id, t.TokenToId(token));
        }

        Assert.Equal("Ġthe", t.IdToToken(t.TokenToId("Ġthe")!.Value));
        Assert.Null(t.TokenToId("definitely-not-a-token"));
        Assert.Null(t.IdToToken(-1));
        Assert.Null(t.IdToToken(t.VocabSize));
    }

    [Fact]
    public void Concurrent_encodes_give_the_same_ids_as_sequential_ones()
    {
        string[] lines = BuiltInCorpus.Text.Split('\n');
        int[][] expected = [.. lines.Select(l => fx.Tokenizer.Encode(l))];
        HfTokenizer fresh = HfTokenizer.Load(fx.Directory); // cold cache
        Parallel.For(0, 8, new ParallelOptions { MaxDegreeOfParallelism = 4 }, worker =>
        {
            for (int i = worker; i < lines.Length * 2; i += 3)
            {
                int k = i % lines.Length;
                Assert.Equal(expected[k], fresh.Encode(lines[k]));
            }
        });
    }

    [Fact]
    public void Missing_tokenizer_json_error_names_the_file()
    {
        string dir = TempDir.Create();
        try
        {
            var ex = Assert.Throws<FileNotFoundException>(() => HfTokenizer.Load(dir));
            Assert.Contains(Path.Combine(dir, "tokenizer.json"), ex.Message);
        }
        finally
        {
            TempDir.Delete(dir);
        }
    }

    [Fact]
    public void Bad_json_error_names_the_file()
    {
        string dir = TempDir.Create();
        try
        {
            File.WriteAllText(Path.Combine(dir, "tokenizer.json"), "{ \"model\": { \"type\": \"BPE\", ");
            var ex = Assert.Throws<InvalidDataException>(() => HfTokenizer.Load(dir));
            Assert.Contains(Path.Combine(dir, "tokenizer.json"), ex.Message);
        }
        finally
        {
            TempDir.Delete(dir);
        }
    }

    [Fact]
    public void Bad_tokenizer_config_json_error_names_that_file()
    {
        string dir = CopyTokenizerJson();
        try
        {
            File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), "not json");
            var ex = Assert.Throws<InvalidDataException>(() => HfTokenizer.Load(dir));
            Assert.Contains(Path.Combine(dir, "tokenizer_config.json"), ex.Message);
        }
        finally
        {
            TempDir.Delete(dir);
        }
    }

    [Theory]
    [InlineData("WordPiece")]
    [InlineData("Unigram")]
    public void Unsupported_model_type_error_names_the_file_and_the_type(string type)
    {
        string dir = TempDir.Create();
        try
        {
            File.WriteAllText(
                Path.Combine(dir, "tokenizer.json"),
                """{"version": "1.0", "model": {"type": "TYPE", "vocab": {"a": 0} } }""".Replace("TYPE", type, StringComparison.Ordinal));
            var ex = Assert.Throws<NotSupportedException>(() => HfTokenizer.Load(dir));
            Assert.Contains(Path.Combine(dir, "tokenizer.json"), ex.Message);
            Assert.Contains(type, ex.Message);
        }
        finally
        {
            TempDir.Delete(dir);
        }
    }

    [Fact]
    public void SentencePiece_style_byte_fallback_bpe_is_rejected_with_the_file_name()
    {
        var ex = Assert.Throws<NotSupportedException>(() => HfTokenizer.FromJson(
            """{"model": {"type": "BPE", "byte_fallback": true, "vocab": {"a": 0}, "merges": []}}""", "/models/x/tokenizer.json"));
        Assert.Contains("/models/x/tokenizer.json", ex.Message);
    }

    [Fact]
    public void Qwen2_style_split_regex_pre_tokenizer_and_nfc_normalizer_load()
    {
        // Pipeline shape of Qwen2's tokenizer.json with our vocab: Split(regex) then ByteLevel(use_regex=false).
        JsonNode root = JsonNode.Parse(File.ReadAllText(Path.Combine(fx.Directory, "tokenizer.json")))!;
        root["normalizer"] = JsonNode.Parse("""{"type": "NFC"}""");
        root["pre_tokenizer"] = JsonNode.Parse("""
            {"type": "Sequence", "pretokenizers": [
              {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, "behavior": "Isolated", "invert": false},
              {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}]}
            """);
        HfTokenizer t = HfTokenizer.FromJson(root.ToJsonString());
        foreach (string text in Samples.Texts)
        {
            Assert.Equal(text.Normalize(NormalizationForm.FormC), t.Decode(t.Encode(text)));
        }

        // Qwen2's regex splits digits one by one.
        Assert.Equal(4, t.Encode("2025").Length);
    }

    private string CopyTokenizerJson()
    {
        string dir = TempDir.Create();
        File.Copy(Path.Combine(fx.Directory, "tokenizer.json"), Path.Combine(dir, "tokenizer.json"));
        return dir;
    }
}

/// <summary>The classic GPT-2 bpe() algorithm, written independently of the code under test.</summary>
internal static class ReferenceBpe
{
    public static int[] Encode(BpeModel model, string text)
    {
        var ranks = new Dictionary<(string, string), int>();
        for (int i = 0; i < model.Merges.Count; i++)
        {
            ranks.TryAdd(model.Merges[i], i);
        }

        var ids = new List<int>();
        var specials = model.AddedTokens.OrderByDescending(t => t.Content.Length).ToList();
        int start = 0;
        for (int i = 0; i <= text.Length; i++)
        {
            AddedToken? hit = i < text.Length ? specials.FirstOrDefault(s => text.AsSpan(i).StartsWith(s.Content)) : null;
            if (i == text.Length || hit is not null)
            {
                EncodeOrdinary(text[start..i], model, ranks, ids);
                if (hit is not null)
                {
                    ids.Add(hit.Id);
                    i += hit.Content.Length - 1;
                    start = i + 1;
                }
            }
        }

        return [.. ids];
    }

    private static void EncodeOrdinary(string text, BpeModel model, Dictionary<(string, string), int> ranks, List<int> ids)
    {
        foreach (System.Text.RegularExpressions.Match m in ByteLevel.Gpt2Regex.Matches(text))
        {
            List<string> word = [.. Encoding.UTF8.GetBytes(m.Value).Select(b => ByteLevel.ByteToChar(b).ToString())];
            while (word.Count > 1)
            {
                (string, string)? best = null;
                int bestRank = int.MaxValue;
                for (int i = 0; i + 1 < word.Count; i++)
                {
                    if (ranks.TryGetValue((word[i], word[i + 1]), out int r) && r < bestRank)
                    {
                        bestRank = r;
                        best = (word[i], word[i + 1]);
                    }
                }

                if (best is null)
                {
                    break;
                }

                var next = new List<string>(word.Count);
                for (int i = 0; i < word.Count; i++)
                {
                    if (i + 1 < word.Count && (word[i], word[i + 1]) == best.Value)
                    {
                        next.Add(word[i] + word[i + 1]);
                        i++;
                    }
                    else
                    {
                        next.Add(word[i]);
                    }
                }

                word = next;
            }

            ids.AddRange(word.Select(w => model.Vocab[w]));
        }
    }
}
