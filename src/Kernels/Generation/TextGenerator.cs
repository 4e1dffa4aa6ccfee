using MoeServer.Kernels.Model;
using MoeServer.Kernels.Sampling;
using MoeServer.Kernels.Tokenization;

namespace MoeServer.Kernels.Generation;

/// <summary>One piece of streamed output: the text that became final with this token.</summary>
public sealed record GeneratedChunk(string Text, SampledToken Token);

/// <summary>The end of a generation: reason and token counts.</summary>
public sealed record GenerationResult(string Text, FinishReason FinishReason, int PromptTokens, int CompletionTokens,
    IReadOnlyList<SampledToken> Tokens);

/// <summary>
/// Single-sequence generation (the offline tools' path; the server's engine batches many sequences instead):
/// prefill the prompt, then sample token by token, streaming text that is final (split UTF-8 characters and
/// possible stop-string prefixes are held back until they resolve).
/// </summary>
public sealed class TextGenerator(MoeModel model, ITokenizer tokenizer)
{
    /// <summary>Prefill chunk size: long prompts are fed in pieces to bound activation memory.</summary>
    public int PrefillChunk { get; init; } = 512;

    public GenerationResult Generate(IReadOnlyList<int> prompt, SamplingParams sampling, Action<GeneratedChunk>? onChunk = null,
        RoutingOverride? routing = null, CancellationToken cancel = default)
    {
        if (prompt.Count == 0) throw new ArgumentException("the prompt has no tokens", nameof(prompt));
        sampling.Validate(model.Config.VocabSize);
        int maxTokens = sampling.MaxTokens ?? Math.Max(0, model.Config.MaxPositionEmbeddings - prompt.Count);
        var eos = new HashSet<int>(model.Config.EosTokenIds);
        if (tokenizer.EosId is { } te) eos.Add(te);
        var stopIds = new HashSet<int>(sampling.StopTokenIds ?? []);
        var sampler = new TokenSampler(sampling, prompt.ToArray());
        var detok = new StreamingDetokenizer(tokenizer, skipSpecialTokens: true);
        var stops = new StopStringMatcher(sampling.StopStrings ?? []);
        var text = new System.Text.StringBuilder();
        var tokens = new List<SampledToken>();
        using var seq = model.NewSequence(prompt.Count + Math.Min(maxTokens, 4096) + 1);

        float[] logits = Prefill(seq, prompt, routing);
        var reason = FinishReason.Length;
        for (int i = 0; i < maxTokens; i++)
        {
            if (cancel.IsCancellationRequested)
            {
                reason = FinishReason.Cancelled;
                break;
            }
            var tok = sampler.Sample(logits);
            tokens.Add(tok);
            if (eos.Contains(tok.TokenId) || stopIds.Contains(tok.TokenId))
            {
                reason = FinishReason.Stop;
                break;
            }
            var step = stops.Append(detok.Push(tok.TokenId));
            if (step.Text.Length > 0)
            {
                text.Append(step.Text);
                onChunk?.Invoke(new GeneratedChunk(step.Text, tok));
            }
            if (step.Stopped)
            {
                reason = FinishReason.Stop;
                break;
            }
            if (i + 1 < maxTokens) logits = model.ForwardSequence(seq, [tok.TokenId], routing)[0];
        }
        if (!stops.IsStopped)
        {
            string rest = stops.Append(detok.Flush()).Text + stops.Flush();
            if (rest.Length > 0)
            {
                text.Append(rest);
                onChunk?.Invoke(new GeneratedChunk(rest, tokens.Count > 0 ? tokens[^1] : default));
            }
        }
        return new GenerationResult(text.ToString(), reason, prompt.Count, tokens.Count, tokens);
    }

    private float[] Prefill(KvCache seq, IReadOnlyList<int> prompt, RoutingOverride? routing)
    {
        float[] last = [];
        for (int start = 0; start < prompt.Count; start += PrefillChunk)
        {
            var chunk = prompt.Skip(start).Take(PrefillChunk).ToArray();
            var batch = new BatchLayout([new BatchSegment(seq, chunk, routing)]);
            using var logits = model.Forward(batch, LogitRows.LastOfEachSegment);
            last = TorchInterop.ToFloatArray(logits);
        }
        return last;
    }
}
