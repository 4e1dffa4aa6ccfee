using System.Text;
using MoeServer.Kernels.Tokenization;

namespace MoeServer.Kernels.Tests.Tokenization;

public class StreamingDetokenizerTests(TokenizerFixture fx) : IClassFixture<TokenizerFixture>
{
    private int[] ByteIds(string text) =>
        Encoding.UTF8.GetBytes(text).Select(b => fx.Tokenizer.TokenToId(ByteLevel.ByteToChar(b).ToString())!.Value).ToArray();

    private int ByteId(byte b) => fx.Tokenizer.TokenToId(ByteLevel.ByteToChar(b).ToString())!.Value;

    [Theory]
    [InlineData("🚀")]
    [InlineData("中")]
    [InlineData("é")]
    [InlineData("👨‍👩‍👧")]
    public void Streaming_decode_holds_back_split_multibyte_characters(string ch)
    {
        var detok = new StreamingDetokenizer(fx.Tokenizer);
        Assert.Equal("a", detok.Push(fx.Tokenizer.Encode("a").Single()));
        int[] ids = ByteIds(ch);
        var outputs = ids.Select(detok.Push).ToList();
        Assert.All(outputs, o => Assert.DoesNotContain('\uFFFD', o));
        Assert.Equal(ch, string.Concat(outputs));
        Assert.False(detok.HasPendingBytes);
        // The first character is only emitted when its last byte arrives.
        int firstLen = Encoding.UTF8.GetByteCount(char.IsSurrogate(ch[0]) ? ch[..2] : ch[..1]);
        Assert.All(outputs.Take(firstLen - 1), o => Assert.Equal(string.Empty, o));
        Assert.NotEqual(string.Empty, outputs[firstLen - 1]);
        Assert.Equal(string.Empty, detok.Flush());
    }

    [Fact]
    public void Streaming_decode_holds_back_a_character_split_between_merged_tokens()
    {
        // "中文🙂" = E4 B8 AD | E6 96 87 | F0 9F 99 82, pushed in chunks that cut through characters.
        var detok = new StreamingDetokenizer(fx.Tokenizer);
        int[] ids = ByteIds("中文🙂");
        Assert.Equal(string.Empty, detok.Push(ids[..2]));
        Assert.True(detok.HasPendingBytes);
        Assert.Equal("中", detok.Push(ids[2..4]));
        Assert.True(detok.HasPendingBytes);
        Assert.Equal("文", detok.Push(ids[4..7]));
        Assert.Equal("🙂", detok.Push(ids[7..]));
        Assert.False(detok.HasPendingBytes);
    }

    [Theory]
    [MemberData(nameof(HfTokenizerTests.SampleTexts), MemberType = typeof(HfTokenizerTests))]
    public void Concatenated_stream_output_equals_decode_of_all_ids(string text)
    {
        foreach (int[] ids in new[] { fx.Tokenizer.Encode(text), ByteIds(text) })
        {
            var detok = new StreamingDetokenizer(fx.Tokenizer);
            var sb = new StringBuilder();
            foreach (int id in ids)
            {
                string piece = detok.Push(id);
                Assert.DoesNotContain('\uFFFD', piece);
                sb.Append(piece);
            }

            sb.Append(detok.Flush());
            Assert.Equal(fx.Tokenizer.Decode(ids), sb.ToString());
            Assert.Equal(text, sb.ToString());
        }
    }

    [Fact]
    public void Concatenated_stream_output_equals_decode_for_the_corpus_with_specials()
    {
        string text = "<|im_start|>user\n" + BuiltInCorpus.Text[..4000] + "<|im_end|>\n<s>中文🙂</s>";
        int[] ids = fx.Tokenizer.Encode(text);
        foreach (bool skip in new[] { false, true })
        {
            var detok = new StreamingDetokenizer(fx.Tokenizer, skipSpecialTokens: skip);
            string streamed = string.Concat(ids.Select(detok.Push)) + detok.Flush();
            Assert.Equal(fx.Tokenizer.Decode(ids, skipSpecialTokens: skip), streamed);
        }
    }

    [Fact]
    public void Invalid_byte_sequences_eventually_emit_replacement_characters()
    {
        var detok = new StreamingDetokenizer(fx.Tokenizer);
        int a = fx.Tokenizer.Encode("a").Single();

        // A lead byte of a 3-byte character followed by ASCII can never complete.
        Assert.Equal(string.Empty, detok.Push(ByteId(0xE4)));
        Assert.Equal("\uFFFDa", detok.Push(a));

        // A stray continuation byte is invalid at once.
        Assert.Equal("\uFFFD", detok.Push(ByteId(0x80)));

        // An incomplete tail is reported when the stream ends.
        Assert.Equal(string.Empty, detok.Push(ByteId(0xF0)));
        Assert.Equal(string.Empty, detok.Push(ByteId(0x9F)));
        Assert.Equal("\uFFFD", detok.Flush());

        int[] all = [ByteId(0xE4), a, ByteId(0x80), ByteId(0xF0), ByteId(0x9F)];
        Assert.Equal("\uFFFDa\uFFFD\uFFFD", fx.Tokenizer.Decode(all));
    }

    [Fact]
    public void Reset_discards_held_back_bytes()
    {
        var detok = new StreamingDetokenizer(fx.Tokenizer);
        detok.Push(ByteId(0xE4));
        Assert.True(detok.HasPendingBytes);
        detok.Reset();
        Assert.False(detok.HasPendingBytes);
        Assert.Equal("x", detok.Push(fx.Tokenizer.Encode("x").Single()));
    }
}
