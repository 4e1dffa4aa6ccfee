using System.Diagnostics;
using MoeServer.Kernels.Tokenization;

namespace MoeServer.Tools;

/// <summary>
/// train-tokenizer: learns the byte-level BPE our trained models share from a corpus file (one document per line)
/// and writes tokenizer.json and tokenizer_config.json (ChatML special tokens and chat template).
/// </summary>
internal static class TrainTokenizerCommand
{
    /// <summary>End of text (between documents, and the model's EOS), then the ChatML turn markers.</summary>
    public static readonly string[] SpecialTokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

    public static int Run(string[] args)
    {
        var cl = new CommandLine(args, new HashSet<string>());
        string corpus = cl.Required("corpus");
        string dir = cl.Required("out");
        int vocab = cl.Int("vocab", 8192);
        int maxLength = cl.Int("model-max-length", 4096);
        cl.RejectUnknown();
        if (vocab is < 512 or > 65536) throw new UsageException($"--vocab must be between 512 and 65536, got {vocab}");
        if (!File.Exists(corpus)) throw new UsageException($"--corpus {corpus} does not exist (src/Tools/Corpus/fetch-corpus.sh makes it)");

        var sw = Stopwatch.StartNew();
        var lines = File.ReadLines(corpus).Where(l => l.Length > 0).ToList();
        Console.Error.WriteLine($"learning a {vocab}-token byte-level BPE from {lines.Count} lines ({new FileInfo(corpus).Length / 1e6:F1} MB) ...");
        var bpe = BpeTrainer.Train(lines.Select(l => l + "\n"), new BpeTrainerOptions
        {
            VocabSize = vocab,
            SpecialTokens = SpecialTokens,
            SpecialTokensFirst = false,
            MinFrequency = 2,
        });
        Directory.CreateDirectory(dir);
        TokenizerJsonWriter.WriteToDirectory(bpe, dir);
        TokenizerJsonWriter.WriteTokenizerConfig(dir, bpe, bosToken: null, eosToken: "<|endoftext|>",
            chatTemplate: ChatTemplates.ChatMlJinja, modelMaxLength: maxLength);
        var tok = HfTokenizer.Load(dir);
        long chars = 0, tokens = 0;
        foreach (var l in lines.Take(2000))
        {
            chars += l.Length;
            tokens += tok.Encode(l).Length;
        }
        Console.Error.WriteLine($"wrote {dir}/tokenizer.json: {bpe.VocabSize} tokens ({bpe.Merges.Count} merges), " +
            $"{(double)chars / Math.Max(1, tokens):F2} characters per token on the first 2000 lines, in {sw.Elapsed.TotalSeconds:F0} s");
        return 0;
    }
}
