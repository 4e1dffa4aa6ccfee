using MoeServer.Kernels.Model;

namespace MoeServer.Bench.Chaos;

/// <summary>The single-node answer to one prompt: the model's direct loop (no actors), greedy, with each step's top-2 margin.</summary>
internal sealed record Reference(int[] Tokens, float[] Margins);

/// <summary>
/// The reference every streamed answer is checked against, and the near-tie rule of the fault tests: token ids must be
/// equal up to the first step where the direct loop's top-2 logit margin is below 1e-4 (either answer is right there;
/// batching may reorder float sums).
/// </summary>
internal static class GreedyReference
{
    public const float NearTie = 1e-4f;
    public const float Bias = -100f;

    /// <summary>The greedy answer with <see cref="Bias"/> added to the logits of <paramref name="banned"/> (as the request's logit_bias).</summary>
    public static Reference Run(MoeModel model, int[] prompt, int maxTokens, IReadOnlySet<int> eos, IReadOnlyCollection<int> banned)
    {
        using var seq = model.NewSequence(prompt.Length + maxTokens + 1);
        var logits = model.ForwardSequence(seq, prompt)[^1];
        var tokens = new List<int>();
        var margins = new List<float>();
        for (int i = 0; i < maxTokens; i++)
        {
            foreach (int id in banned) logits[id] += Bias;
            var (best, margin) = Top(logits);
            tokens.Add(best);
            margins.Add(margin);
            if (eos.Contains(best)) break;
            if (i + 1 < maxTokens) logits = model.ForwardSequence(seq, [best])[0];
        }
        return new Reference(tokens.ToArray(), margins.ToArray());
    }

    private static (int Best, float Margin) Top(float[] x)
    {
        int best = 0;
        for (int i = 1; i < x.Length; i++) if (x[i] > x[best]) best = i;
        float second = float.NegativeInfinity;
        for (int i = 0; i < x.Length; i++) if (i != best && x[i] > second) second = x[i];
        return (best, x[best] - second);
    }

    /// <summary>
    /// Checks a completed stream: "same", or where it differs. A stream that stopped early (finish reason stop) on a
    /// special token passes if everything before matched: the server also stops on the chat template's end token, which
    /// the direct loop does not know.
    /// </summary>
    public static (string Verdict, int Compared) Compare(Reference want, IReadOnlyList<int> got, string? finishReason, TokenIds ids)
    {
        int n = 0;
        for (int i = 0; i < want.Tokens.Length; i++)
        {
            if (want.Margins[i] < NearTie) return ("same", n);
            if (i >= got.Count)
            {
                bool stoppedOnSpecial = finishReason == "stop" && got.Count > 0 && got[^1] >= 0 && ids.IsSpecial(got[^1]);
                return stoppedOnSpecial ? ("same", n) : ($"ended after {got.Count} tokens, expected {want.Tokens.Length}", n);
            }
            if (got[i] == TokenIds.Ambiguous) return ("same", n); // bytes shared by two ids: nothing more can be compared
            if (got[i] != want.Tokens[i])
                return ($"token {i} is {got[i]}, expected {want.Tokens[i]} (top-2 margin {want.Margins[i]:G3})", n);
            n++;
        }
        if (got.Count > want.Tokens.Length) return ($"{got.Count} tokens, expected {want.Tokens.Length}", n);
        return ("same", n);
    }
}
