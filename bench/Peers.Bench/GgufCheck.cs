using System.Globalization;
using System.Text;
using LLama;
using LLama.Native;
using MoeServer.Bench.Common;
using MoeServer.Kernels.Checkpoints;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Formats;
using MoeServer.Kernels.Formats.Gguf;
using MoeServer.Kernels.Model;
using MoeServer.Kernels.Tokenization;

namespace MoeServer.Bench.Peers;

/// <summary>
/// <c>--gguf-only</c>: llama.cpp and we load the same GGUF files (every family's `small` preset exported f32, a
/// Mixtral-style file with per-expert tensors, one split in three parts, and one with a SentencePiece vocabulary trained
/// by spm_train) and must agree token for token: tokenization of a multilingual, whitespace-heavy text (with and
/// without special tokens and bos), and greedy continuations computed by both from the file.
/// </summary>
internal static class GgufCheck
{
    private sealed record Case(string Name, ModelArchitecture Family, GgufExportOptions Options, string? Pre = null);

    public static int Run(string repo, string outDir, int threads, Action<string> log)
    {
        NativeLibraryConfig.All.WithLogCallback((level, message) =>
        {
            if (level >= LLamaLogLevel.Error) Console.Error.Write(message);
        });
        string spmVocab = Path.Combine(repo, "tests", "Kernels.Tests", "Fixtures", "spm", "spm.vocab");
        string textFile = Path.Combine(repo, "tests", "Kernels.Tests", "Fixtures", "spm", "text.txt");
        string[] lines =
        [
            .. File.ReadAllLines(textFile).Where(l => l.Length > 0),
            "I'LL say it's THEY'RE we've 1234567 12 3.5e10 $100+200=300 <=> ^~| !!!?? ...",
            "line one\r\n\r\nline two\n\n   \tindented\n",
        ];
        Case[] cases =
        [
            new("mixtral (llama), stacked", ModelArchitecture.Mixtral, new GgufExportOptions()),
            new("mixtral (llama), per-expert tensors", ModelArchitecture.Mixtral, new GgufExportOptions { PerExpert = true }),
            new("mixtral (llama), 3 split parts", ModelArchitecture.Mixtral, new GgufExportOptions { Splits = 3 }),
            new("mixtral (llama), SentencePiece vocab", ModelArchitecture.Mixtral, new GgufExportOptions { SpmVocab = spmVocab }),
            new("qwen2moe", ModelArchitecture.Qwen2Moe, new GgufExportOptions()),
            new("qwen3moe", ModelArchitecture.Qwen3Moe, new GgufExportOptions()),
            new("olmoe", ModelArchitecture.Olmoe, new GgufExportOptions()),
            // The same byte-level vocabulary under llama.cpp's other pre-tokenizers (tokenizer.ggml.pre rewritten).
            new("qwen2moe, pre = qwen2", ModelArchitecture.Qwen2Moe, new GgufExportOptions(), "qwen2"),
            new("qwen2moe, pre = llama-bpe", ModelArchitecture.Qwen2Moe, new GgufExportOptions(), "llama-bpe"),
            new("qwen2moe, pre = olmo", ModelArchitecture.Qwen2Moe, new GgufExportOptions(), "olmo"),
            new("qwen2moe, pre = default", ModelArchitecture.Qwen2Moe, new GgufExportOptions(), "default"),
        ];
        var table = new MarkdownTable("file", "tokenizer", "lines tokenized equal", "with specials + bos equal", "greedy tokens equal", "max |logit diff| at prompt end");
        bool allEqual = true;
        var notes = new List<string>();
        foreach (var c in cases)
        {
            string name = ModelArchitectureNames.ToModelType(c.Family);
            string dir = Path.Combine(Path.GetTempPath(), $"peers-gguf-{name}");
            if (!File.Exists(Path.Combine(dir, "model.safetensors")))
            {
                var cfg = CheckpointPresets.Config(c.Family, CheckpointPreset.Small);
                if (c.Family == ModelArchitecture.Olmoe) cfg = cfg with { NumKvHeads = cfg.NumHeads };
                CheckpointFactory.Create(cfg, dir, new GeneratorOptions { Seed = 3, DType = TensorDType.F32 });
            }
            string slug = new string(c.Name.Select(ch => char.IsLetterOrDigit(ch) ? ch : '-').ToArray());
            string gguf = GgufExporter.Export(dir, Path.Combine(Path.GetTempPath(), $"peers-gguf-{slug}.gguf"), c.Options)[0];
            if (c.Pre is not null)
            {
                var file = GgufExporter.Build(dir, c.Options);
                file.Set("tokenizer.ggml.pre", GgufValue.Of(c.Pre));
                GgufWriter.Write(gguf, file);
            }
            log($"{c.Name}: {gguf}");
            var tok = ModelTokenizer.Load(gguf);
            using var ours = MoeModel.Load(gguf, WeightPrecision.F32);
            int vocab = ours.Config.VocabSize;
            var p = PeerSettings.Exact(gguf, 512, threads);
            LLamaWeights weights;
            try
            {
                weights = LLamaWeights.LoadFromFile(p);
            }
            catch (Exception e) when (e is LLama.Exceptions.LoadWeightsFailedException or LLama.Exceptions.RuntimeError)
            {
                table.AddRow(c.Name, ((GgufTokenizer)tok).Model, "", "", "llama.cpp cannot load the file", "");
                notes.Add($"- {c.Name}: llama.cpp (LLamaSharp 0.30.0) refused the file: it no longer reads the per-expert " +
                          "`blk.N.ffn_gate.E.weight` layout of older Mixtral files and asks for `blk.0.ffn_down_exps.weight`. We load it " +
                          "(its logits equal the HF directory's: `GgufModelTests`).");
                log($"  llama.cpp refused it: {e.Message}");
                continue;
            }
            using (weights)
            using (var ctx = weights.CreateContext(p))
            {
                int plainEqual = 0, specialEqual = 0;
                string special = $"{tok.BosToken}{lines[0]}{tok.EosToken}{lines[1]}";
                foreach (var line in lines)
                {
                    var peer = ctx.Tokenize(line, addBos: false, special: false).Select(t => (int)t).ToArray();
                    var mine = tok.Encode(line, parseSpecialTokens: false);
                    if (peer.SequenceEqual(mine)) plainEqual++;
                    else log($"  tokenization differs for '{line}':\n    ours  {string.Join(' ', mine)}\n    llama {string.Join(' ', peer)}");
                }
                foreach (var text in new[] { special, lines[2] + tok.EosToken + lines[3] })
                {
                    var peer = ctx.Tokenize(text, addBos: true, special: true).Select(t => (int)t).ToArray();
                    var mine = tok.EncodePrompt(text, parseSpecialTokens: true);
                    if (peer.SequenceEqual(mine)) specialEqual++;
                    else log($"  tokenization with specials differs for '{text}':\n    ours  {string.Join(' ', mine)}\n    llama {string.Join(' ', peer)}");
                }
                float[][] Peer(IReadOnlyList<int> tokens)
                {
                    ctx.NativeHandle.MemoryClear();
                    var batch = new LLamaBatch();
                    for (int i = 0; i < tokens.Count; i++) batch.Add((LLamaToken)tokens[i], i, LLamaSeqId.Zero, true);
                    if (ctx.NativeHandle.Decode(batch) != DecodeResult.Ok) throw new InvalidOperationException("llama.cpp decode failed");
                    return [ctx.NativeHandle.GetLogitsIth(tokens.Count - 1)[..vocab].ToArray()];
                }
                float[] Ours(IReadOnlyList<int> tokens)
                {
                    using var seq = ours.NewSequence(tokens.Count);
                    return ours.ForwardSequence(seq, tokens)[^1];
                }
                var prompt = tok.EncodePrompt(lines[0] + " " + lines[3]).ToList();
                var la = Ours(prompt);
                var lb = Peer(prompt)[0];
                double diff = la.Zip(lb).Max(x => Math.Abs(x.First - x.Second));
                const int n = 12;
                int equal = 0;
                var sa = prompt.ToList();
                var sb = prompt.ToList();
                for (int i = 0; i < n; i++)
                {
                    int ta = ArgMax(Ours(sa)), tb = ArgMax(Peer(sb)[0]);
                    sa.Add(ta);
                    sb.Add(tb);
                    if (ta != tb) break;
                    equal++;
                }
                allEqual &= plainEqual == lines.Length && specialEqual == 2 && equal == n;
                table.AddRow(c.Name, ((GgufTokenizer)tok).Model + (tok is GgufBpeTokenizer b ? $" ({b.PreTokenizer})" : ""),
                    $"{plainEqual}/{lines.Length}", $"{specialEqual}/2", $"{equal}/{n}", diff.ToString("E2", CultureInfo.InvariantCulture));
                log($"  tokens {plainEqual}/{lines.Length}, specials {specialEqual}/2, greedy {equal}/{n}, max logit diff {diff:E2}");
            }
        }
        var report = new StringBuilder();
        report.AppendLine("# Peers, GGUF: llama.cpp (LLamaSharp 0.30.0, CPU) and we load the same GGUF files");
        report.AppendLine();
        report.AppendLine($"{DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC, {threads} threads. `dotnet run --project bench/Peers.Bench -c Release -- --gguf-only`. " +
            "Each family's `small` preset (random f32 weights; OLMoE without GQA, as llama.cpp's olmoe) exported with `export-gguf --type f32`, " +
            "plus Mixtral-style variants: per-expert tensors (`--per-expert`), split in three parts (`--splits 3`, loaded from the first part), and a " +
            "SentencePiece vocabulary (`--spm`, the spm_train model of `tests/Kernels.Tests/Fixtures/spm`). Both sides read the file: we load it with " +
            "`MoeModel.Load(file.gguf)` and its `tokenizer.ggml.*` metadata; llama.cpp with an f32 K/V cache and flash attention off.");
        report.AppendLine();
        report.AppendLine($"Tokenization: {lines.Length} texts, the lines of `tests/Kernels.Tests/Fixtures/spm/text.txt` (English, accents, Greek, Cyrillic, CJK, Hangul, emoji, " +
            "tabs, runs of spaces, leading/trailing spaces) and two more (contractions in capitals, digit runs, punctuation runs, CR/LF runs), " +
            "plain text without bos; then two texts with bos/eos tokens inside, parsed as special, with the " +
            "model's own bos rule (llama_tokenize add_special / our EncodePrompt). Greedy: 12 tokens from the same prompt, each side recomputing the whole sequence.");
        report.AppendLine();
        report.AppendLine(table.ToString());
        foreach (var note in notes) report.AppendLine(note);
        File.WriteAllText(Path.Combine(outDir, "peers-gguf.md"), report.ToString());
        Console.WriteLine(report.ToString());
        return allEqual ? 0 : 1;
    }

    private static int ArgMax(float[] x)
    {
        int best = 0;
        for (int i = 1; i < x.Length; i++) if (x[i] > x[best]) best = i;
        return best;
    }
}
