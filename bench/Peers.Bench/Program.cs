using System.Globalization;
using System.Text;
using LLama;
using LLama.Common;
using LLama.Native;
using MoeServer.Bench.Common;
using MoeServer.Kernels.Formats.Gguf;
using MoeServer.Kernels.Generation;
using MoeServer.Kernels.Model;
using MoeServer.Kernels.Tokenization;

// Peers bench. The trained layer-wise model (models/mixtral-moe) is exported to
// GGUF f32 and loaded by llama.cpp (LLamaSharp 0.30.0, CPU backend); our TorchSharp model runs the same checkpoint in
// f32. Greedy continuations of the same prompts are compared token by token (with each side's top-2 margin where they
// part), and the perplexity of the committed held-out text is computed by both with the same windows.
// Then every family's export against llama.cpp on random weights, and the speed comparison on the bench preset.
// Usage: dotnet run --project bench/Peers.Bench -c Release -- [--quick] [--correctness-only] [--gguf-only]
// --gguf-only: only the GGUF agreement check (GgufCheck: tokenization and greedy continuation of every family's file,
// per-expert, split and SentencePiece variants), written to bench/results/peers-gguf.md.
CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
bool quick = args.Contains("--quick");
string repo = BenchEnvironment.RepoRoot();
string modelDir = Path.Combine(repo, "models", "mixtral-moe");
string outDir = Path.Combine(repo, "bench", "results");
string gguf = Path.Combine(Path.GetTempPath(), "peers-mixtral-moe-f32.gguf");
const int Window = 128;
int threads = Environment.ProcessorCount;
if (args.Contains("--gguf-only")) return MoeServer.Bench.Peers.GgufCheck.Run(repo, outDir, threads, Console.WriteLine);

Console.WriteLine($"exporting {modelDir} to {gguf} (f32)...");
GgufExporter.Export(modelDir, gguf, GgmlType.F32);
NativeLibraryConfig.All.WithLogCallback((level, message) =>
{
    if (level >= LLamaLogLevel.Error) Console.Error.Write(message);
});
var lp = MoeServer.Bench.Peers.PeerSettings.Exact(gguf, Window + 8, threads);
using var weights = LLamaWeights.LoadFromFile(lp);
using var ctx = weights.CreateContext(lp);
using var defaultCtx = weights.CreateContext(MoeServer.Bench.Peers.PeerSettings.Defaults(gguf, Window + 8, threads));
var tokenizer = ModelTokenizer.Load(modelDir);
using var ours = MoeModel.Load(modelDir, WeightPrecision.F32);
int vocab = ours.Config.VocabSize;

// llama.cpp: logits of every position of a fresh sequence.
float[][] PeerLogits(IReadOnlyList<int> tokens) => LogitsOf(ctx, tokens);
float[][] LogitsOf(LLamaContext ctx, IReadOnlyList<int> tokens)
{
    ctx.NativeHandle.MemoryClear();
    var batch = new LLamaBatch();
    for (int i = 0; i < tokens.Count; i++) batch.Add((LLamaToken)tokens[i], i, LLamaSeqId.Zero, logits: true);
    var r = ctx.NativeHandle.Decode(batch);
    if (r != DecodeResult.Ok) throw new InvalidOperationException($"llama.cpp decode failed: {r}");
    return Enumerable.Range(0, tokens.Count).Select(i => ctx.NativeHandle.GetLogitsIth(i)[..vocab].ToArray()).ToArray();
}

float[][] OurLogits(IReadOnlyList<int> tokens)
{
    using var seq = ours.NewSequence(tokens.Count);
    return ours.ForwardSequence(seq, tokens);
}

static (int Best, float Margin) Top(float[] x)
{
    int best = 0;
    for (int i = 1; i < x.Length; i++) if (x[i] > x[best]) best = i;
    float second = float.NegativeInfinity;
    for (int i = 0; i < x.Length; i++) if (i != best) second = Math.Max(second, x[i]);
    return (best, x[best] - second);
}

int[] Greedy(Func<IReadOnlyList<int>, float[][]> forward, int[] prompt, int n, List<float> margins)
{
    var seq = prompt.ToList();
    for (int i = 0; i < n; i++)
    {
        var (best, margin) = Top(forward(seq)[^1]); // full recompute: the same arithmetic path every step on both sides
        margins.Add(margin);
        seq.Add(best);
    }
    return seq.Skip(prompt.Length).ToArray();
}

var report = new StringBuilder();
report.AppendLine("# Peers: llama.cpp (LLamaSharp 0.30.0, CPU) on the same weights");
report.AppendLine();
report.AppendLine($"{DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC, {Environment.ProcessorCount} threads each. `models/mixtral-moe` exported with `moe-tools export-gguf --type f32` (arch `llama`); ours runs the HF checkpoint in f32. " +
    "llama.cpp runs with an f32 K/V cache and flash attention off (f32 arithmetic throughout) unless a row says \"llama.cpp defaults\" (flash attention, f16 cache: its CPU defaults).");
report.AppendLine();
string[] prompts =
[
    "In the beginning God created the heaven and the earth.",
    "And God said, Let there be light:",
    "The LORD is my shepherd;",
    "hacker n. A person who enjoys exploring the details of programmable systems",
    "And it came to pass, when",
    "kludge n.",
];
int n = quick ? 8 : 24;
var table = new MarkdownTable("prompt", "tokens equal", "first difference", "margin there (ours / llama.cpp)", "max |logit diff| at prompt end");
int equalAll = 0, total = 0;
foreach (var text in prompts)
{
    var prompt = tokenizer.Encode(text, parseSpecialTokens: false).ToArray();
    var peerTokens = ctx.Tokenize(text, addBos: false, special: false).Select(t => (int)t).ToArray();
    if (!peerTokens.SequenceEqual(prompt)) Console.WriteLine($"tokenization differs for '{text}': ours {string.Join(",", prompt)} llama.cpp {string.Join(",", peerTokens)}");
    var om = new List<float>();
    var pm = new List<float>();
    var a = Greedy(OurLogits, prompt, n, om);
    var b = Greedy(PeerLogits, prompt, n, pm);
    int same = a.Zip(b).TakeWhile(x => x.First == x.Second).Count();
    equalAll += same;
    total += n;
    var la = OurLogits(prompt)[^1];
    var lb = PeerLogits(prompt)[^1];
    double diff = la.Zip(lb).Max(x => Math.Abs(x.First - x.Second));
    table.AddRow(text.Length > 40 ? text[..40] + "…" : text, $"{same}/{n}", same == n ? "" : $"token {same}",
        same == n ? "" : $"{om[same]:F4} / {pm[same]:F4}", diff.ToString("E2", CultureInfo.InvariantCulture));
    Console.WriteLine($"'{text}': {same}/{n} equal; ours: {tokenizer.Decode(a)} | llama.cpp: {tokenizer.Decode(b)}");
}
report.AppendLine($"## Greedy continuations ({n} tokens each): {equalAll} of {total} tokens equal up to the first difference");
report.AppendLine();
report.AppendLine(table.ToString());

// Perplexity of the held-out text, the training protocol's windows, under both.
var held = PerplexityEvaluator.LineDocuments(tokenizer, Path.Combine(repo, "models", "corpus", "heldout-subset.txt"));
int windows = quick ? 10 : 40;
var tokensUsed = held.Take(windows * Window + 1).ToArray();
var oursPpl = PerplexityEvaluator.EvaluateWindows(ours, tokensUsed, Window);
double PeerPerplexity(LLamaContext c, out long scored)
{
    double nll = 0;
    scored = 0;
    for (int start = 0; start + 2 <= tokensUsed.Length; start += Window)
    {
        int len = Math.Min(Window + 1, tokensUsed.Length - start);
        var chunk = tokensUsed.AsSpan(start, len).ToArray();
        var logits = LogitsOf(c, chunk[..^1]);
        for (int t = 0; t < logits.Length; t++)
        {
            var row = logits[t];
            double max = row.Max(), sum = 0;
            foreach (var v in row) sum += Math.Exp(v - max);
            nll -= row[chunk[t + 1]] - max - Math.Log(sum);
            scored++;
        }
    }
    return Math.Exp(nll / scored);
}
double peerPpl = PeerPerplexity(ctx, out long scored);
double peerDefaultPpl = PeerPerplexity(defaultCtx, out _);
report.AppendLine();
report.AppendLine($"## Held-out perplexity ({windows} windows of {Window}, {scored} scored tokens)");
report.AppendLine();
var pt = new MarkdownTable("engine", "perplexity", "ours relative to it");
pt.AddRow("ours (TorchSharp, f32)", oursPpl.Perplexity.ToString("F4", CultureInfo.InvariantCulture), "");
pt.AddRow("llama.cpp (GGUF f32)", peerPpl.ToString("F4", CultureInfo.InvariantCulture), Pct(oursPpl.Perplexity / peerPpl - 1));
pt.AddRow("llama.cpp defaults (GGUF f32)", peerDefaultPpl.ToString("F4", CultureInfo.InvariantCulture), Pct(oursPpl.Perplexity / peerDefaultPpl - 1));
report.AppendLine(pt.ToString());
// Every family's export against llama.cpp (random weights: layout, not quality).
int familyTokens = quick ? 6 : 12;
var ft = new MarkdownTable("family", "llama.cpp arch", "max |logit diff|", "median over positions", "router top-k margin at the worst position", "greedy tokens equal");
foreach (var r in MoeServer.Bench.Peers.FamilyCheck.Run(threads, familyTokens, Console.WriteLine))
    ft.AddRow(r.Family, r.Arch, r.MaxLogitDiff.ToString("E2", CultureInfo.InvariantCulture), r.MedianPositionDiff.ToString("E2", CultureInfo.InvariantCulture),
        $"{r.WorstRouterMargin:E2} (median {r.MedianRouterMargin:E2})", $"{r.GreedyEqual}/{r.Greedy}");
report.AppendLine();
report.AppendLine("## Every family: `small` preset, random f32 weights, exported f32, 24-token prompt");
report.AppendLine();
report.AppendLine("Logits of every prompt position and a greedy continuation, ours vs llama.cpp (f32 cache, no flash attention). " +
    "The router margin is the smallest gap between the k-th and (k+1)-th router logit over the layers: where it is within rounding, " +
    "the two may pick different experts (with llama.cpp's defaults, OLMoE's position 19 has a margin of 1.2e-3 and its logits parted by 0.12 there).");
report.AppendLine();
report.AppendLine(ft.ToString());
if (!args.Contains("--correctness-only"))
{
    // Speed on the bench preset, bf16 on both sides, same threads.
    string benchDir = MoeServer.Bench.Peers.SpeedComparison.PrepareCheckpoint(Console.WriteLine);
    string benchGguf = Path.Combine(Path.GetTempPath(), "peers-bench-mixtral-bf16.gguf");
    Console.WriteLine($"exporting the bench preset to {benchGguf} (bf16)...");
    GgufExporter.Export(benchDir, benchGguf, GgmlType.BF16);
    int benchVocab = MoeServer.Kernels.Config.ModelConfig.Load(benchDir).VocabSize;
    int decodeTokens = quick ? 16 : 48;
    int[] concurrency = quick ? [8] : [8, 32];
    Console.WriteLine("llama.cpp speed...");
    var peer = await MoeServer.Bench.Peers.SpeedComparison.PeerAsync(benchGguf, benchVocab, threads, decodeTokens, concurrency);
    Console.WriteLine("our engine's speed...");
    var mine = await MoeServer.Bench.Peers.SpeedComparison.OursAsync(benchDir, benchVocab, decodeTokens, concurrency);
    report.AppendLine();
    report.AppendLine($"## Speed: `bench` preset (mixtral family, 16 layers, 8 experts x 2816, hidden 1024, random bf16 weights), GGUF bf16, {threads} threads each");
    report.AppendLine();
    report.AppendLine($"Prompt processing: one {MoeServer.Bench.Peers.SpeedComparison.PromptTokens}-token prompt. Decode: {decodeTokens} tokens after a {MoeServer.Bench.Peers.SpeedComparison.StreamPrompt}-token prompt. " +
                      "Aggregate: N streams started together, generated tokens / wall time (prompts included). llama.cpp's streams share one llama_batch per step " +
                      "(a sequence each): once through LLamaSharp's BatchedExecutor (a conversation per stream, Infer per step) and once as hand-built batches; " +
                      "the ratio is against the faster. Ours are concurrent engine requests (continuous batching). Prompt processing has no executor variant (one batch either way).");
    report.AppendLine();
    var st = new MarkdownTable("measure", "ours tok/s", "llama.cpp BatchedExecutor", "llama.cpp raw llama_batch", "ours / faster llama.cpp", "target");
    st.AddRow("prompt processing (512)", F(mine.PromptTokensPerSecond), "", F(peer.RawBatch.PromptTokensPerSecond),
        R(mine.PromptTokensPerSecond, peer.Prompt), "");
    st.AddRow("decode, 1 stream", F(mine.DecodeTokensPerSecond), F(peer.Executor.DecodeTokensPerSecond), F(peer.RawBatch.DecodeTokensPerSecond),
        R(mine.DecodeTokensPerSecond, peer.Decode), ">= 0.8x");
    foreach (int streams in concurrency)
        st.AddRow($"aggregate, {streams} streams", F(mine.AggregateTokensPerSecond[streams]), F(peer.Executor.AggregateTokensPerSecond[streams]),
            F(peer.RawBatch.AggregateTokensPerSecond[streams]), R(mine.AggregateTokensPerSecond[streams], peer.Aggregate(streams)), streams == 32 ? ">= 1.5x" : "");
    report.AppendLine(st.ToString());
    var levels = mine.AggregateTokensPerSecond.Keys.Order().ToArray();
    double[] xs = levels.Select(x => (double)x).ToArray();
    string png = BenchPlot.Lines(Path.Combine(outDir, "peers-throughput.png"), "Aggregate decode throughput vs streams (bench preset, bf16)",
        "concurrent streams", "tokens/s",
        [("ours", xs, levels.Select(x => mine.AggregateTokensPerSecond[x]).ToArray()),
         ("llama.cpp BatchedExecutor", xs, levels.Select(x => peer.Executor.AggregateTokensPerSecond[x]).ToArray()),
         ("llama.cpp raw batch", xs, levels.Select(x => peer.RawBatch.AggregateTokensPerSecond[x]).ToArray())]);
    report.AppendLine();
    report.AppendLine($"![throughput]({Path.GetFileName(png)})");
}
File.WriteAllText(Path.Combine(outDir, "peers.md"), report.ToString());
Console.WriteLine(report.ToString());
return Math.Abs(oursPpl.Perplexity / peerPpl - 1) <= 0.01 ? 0 : 1;

// a third section so a value that rounds to zero prints as 0.000, not -+0.000
static string Pct(double ratio) => (ratio * 100).ToString("+0.000;-0.000;0.000", CultureInfo.InvariantCulture) + "%";
static string F(double v) => v.ToString(v >= 100 ? "F0" : "F1", CultureInfo.InvariantCulture);
static string R(double a, double b) => (a / b).ToString("F2", CultureInfo.InvariantCulture) + "x";
