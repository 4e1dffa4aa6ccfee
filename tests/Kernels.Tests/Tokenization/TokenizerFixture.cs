using MoeServer.Kernels.Tokenization;

namespace MoeServer.Kernels.Tests.Tokenization;

/// <summary>Trains one tokenizer on the built-in corpus and writes it (tokenizer.json + config) to a temp dir.</summary>
public sealed class TokenizerFixture : IDisposable
{
    public static readonly string[] Specials =
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s>", "</s>", "[INST]", "[/INST]"];

    public TokenizerFixture()
    {
        Model = BpeTrainer.Train(BuiltInCorpus.Text, new BpeTrainerOptions { VocabSize = 1024, SpecialTokens = Specials });
        Directory = TempDir.Create();
        TokenizerJsonWriter.WriteToDirectory(Model, Directory);
        TokenizerJsonWriter.WriteTokenizerConfig(Directory, Model, "<s>", "</s>", ChatTemplates.ChatMlJinja);
        Tokenizer = HfTokenizer.Load(Directory);
    }

    public BpeModel Model { get; }

    public string Directory { get; }

    public HfTokenizer Tokenizer { get; }

    public void Dispose() => TempDir.Delete(Directory);
}

internal static class TempDir
{
    public static string Create()
    {
        string dir = Path.Combine(Path.GetTempPath(), "moe-tok-tests-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        return dir;
    }

    public static void Delete(string dir)
    {
        try
        {
            Directory.Delete(dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>Sample texts for round trips.</summary>
internal static class Samples
{
    public static readonly string[] Texts =
    [
        "",
        "Hello, world!",
        "The quick brown fox jumps over the lazy dog.",
        "  leading spaces, trailing spaces   ",
        "tabs\tand\nnewlines\r\n\r\nand   runs    of     spaces\n\n\n\n",
        "Zürich, café, naïve, déjà vu — “quotes” and ‘more’ … €12.50 × 3 ≥ 30",
        "中文测试：我们明天去爬山吧。東京の朝はとても静かです。",
        "Emoji: 🙂🚀🌍🌎🌏 ❤️ 👍🏽 👨‍👩‍👧 end",
        "Ελληνικά: καλημέρα; Русский: привет, мир!",
        "code: for (int i = 0; i < n; i++) { sum += a[i] * 2; } // done",
        "numbers 1234567890 3.14159 -42 +44 20 7946 0958 2025-03-14T08:02:11Z",
        "it's, you're, we've, I'm, they'll, he'd, DON'T",
        "\u0000\u0001\u007f control bytes and \u00ad soft hyphen",
        "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 astral letters 𠀀𠀁",
        "a",
        " ",
        "\n",
    ];
}
