using System.Collections.Concurrent;
using MoeServer.Actors.Generation;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Generation;
using MoeServer.Kernels.Model;
using MoeServer.Kernels.Sampling;
using MoeServer.Kernels.Tests.Support;
using MoeServer.Kernels.Tokenization;

namespace MoeServer.Actors.Tests.Support;

/// <summary>One request of a workload and what the model's direct loop answers it with.</summary>
public sealed record ExpectedGeneration(string RequestId, int[] Prompt, int MaxTokens, int[] Tokens, float[] Margins, bool EndsWithEos);

/// <summary>
/// Greedy requests of different prompt lengths and max_tokens, with the direct loop's answers (computed once per
/// checkpoint and shared by the single-node and cluster tests).
/// </summary>
public static class GreedyWorkload
{
    /// <summary>Prompt lengths: single token, short, and several longer than the test prefill chunk (16).</summary>
    public static readonly int[] PromptLengths = [1, 3, 7, 12, 17, 25, 33, 40];
    public static readonly int[] MaxTokens = [8, 24, 10, 22, 12, 20, 16, 14];

    private static readonly ConcurrentDictionary<string, Lazy<ExpectedGeneration[]>> Cache = new();

    /// <summary>Deterministic prompt tokens, clear of the special tokens at the start of the vocabulary.</summary>
    public static int[] Prompt(int length, int seed, int vocab)
    {
        var p = new int[length];
        uint x = (uint)(seed * 2654435761u + 12345u);
        for (int i = 0; i < length; i++)
        {
            x = x * 1664525u + 1013904223u;
            p[i] = 8 + (int)((x >> 8) % (uint)(vocab - 8));
        }
        return p;
    }

    /// <summary>Token ids that end a generation in the engine: config eos ids plus the tokenizer's eos.</summary>
    public static HashSet<int> EosIds(string dir)
    {
        var cfg = ModelConfig.Load(dir);
        var eos = new HashSet<int>(cfg.EosTokenIds);
        if (HfTokenizer.Load(dir).EosId is { } te) eos.Add(te);
        return eos;
    }

    public static ExpectedGeneration[] For(ModelArchitecture arch) => Cache.GetOrAdd(arch.ToString(), _ => new Lazy<ExpectedGeneration[]>(() =>
    {
        string dir = TinyCheckpoints.Get(arch);
        using var model = MoeModel.Load(dir, WeightPrecision.F32);
        var eos = EosIds(dir);
        return PromptLengths.Select((len, i) =>
        {
            var prompt = Prompt(len, 100 + i, model.Config.VocabSize);
            var (tokens, margins) = DirectGreedy.Run(model, prompt, MaxTokens[i], eos: eos);
            return new ExpectedGeneration($"{arch}-{i}", prompt, MaxTokens[i], tokens, margins, eos.Contains(tokens[^1]));
        }).ToArray();
    })).Value;

    public static GenerationRequest Request(ExpectedGeneration e, string prefix = "") =>
        new(prefix + e.RequestId, e.Prompt, SamplingParams.Greedy with { MaxTokens = e.MaxTokens });

    /// <summary>Submits every request at once and reads every stream to its end.</summary>
    public static async Task<(string Text, TokenChunk Final, IReadOnlyList<int> TokenIds)[]> RunAllAsync(MoeEngine engine, IEnumerable<GenerationRequest> requests)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(90));
        return await Task.WhenAll(requests.Select(async r =>
        {
            var stream = await engine.SubmitAsync(r);
            return await stream.CollectAsync(timeout.Token);
        }));
    }

    /// <summary>
    /// Tokens equal the direct loop's (margin rule), and the final chunk tells the truth: finish reason length, or stop
    /// when the direct loop ended with an eos token; usage counts the prompt and the generated tokens. Returns how many
    /// tokens were compared.
    /// </summary>
    public static int AssertMatches(ExpectedGeneration want, (string Text, TokenChunk Final, IReadOnlyList<int> TokenIds) got, string what)
    {
        var final = got.Final;
        Assert.True(final.Error is null, $"{what}: ended with error {final.Error}");
        int compared = DirectGreedy.AssertSameGreedy(want.Tokens, want.Margins, got.TokenIds, what);
        Assert.NotNull(final.Usage);
        Assert.Equal(want.Prompt.Length, final.Usage!.PromptTokens);
        Assert.Equal(got.TokenIds.Count, final.Usage.CompletionTokens);
        Assert.InRange(got.TokenIds.Count, 1, want.MaxTokens);
        if (compared == want.Tokens.Length)
        {
            // No near-tie: the whole answer is determined.
            Assert.Equal(want.Tokens.Length, got.TokenIds.Count);
            Assert.Equal(want.EndsWithEos ? FinishReason.Stop : FinishReason.Length, final.FinishReason);
        }
        else
        {
            Assert.True(final.FinishReason is FinishReason.Length or FinishReason.Stop, $"{what}: finish reason {final.FinishReason}");
            if (final.FinishReason == FinishReason.Length) Assert.Equal(want.MaxTokens, got.TokenIds.Count);
        }
        return compared;
    }
}
