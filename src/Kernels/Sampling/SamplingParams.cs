namespace MoeServer.Kernels.Sampling;

/// <summary>
/// Per-request sampling settings (OpenAI / vLLM vocabulary). Defaults switch every option off: plain sampling from
/// the model's distribution at temperature 1.
/// </summary>
/// <remarks>
/// <para>Order in which <see cref="TokenSampler"/> applies them to one logits row (the vLLM order):</para>
/// <list type="number">
/// <item><see cref="LogitBias"/> is added to the raw logits;</item>
/// <item>penalties: <see cref="RepetitionPenalty"/> (prompt + generated tokens), then <see cref="FrequencyPenalty"/>
/// and <see cref="PresencePenalty"/> (generated tokens only);</item>
/// <item>greedy (<see cref="Temperature"/> 0) takes the argmax here and stops; otherwise logits are divided by
/// <see cref="Temperature"/>;</item>
/// <item><see cref="TopK"/> keeps the k highest;</item>
/// <item><see cref="TopP"/> keeps the smallest highest-first set whose renormalised mass is at least p;</item>
/// <item><see cref="MinP"/> drops tokens whose probability is below MinP times the top probability;</item>
/// <item>one token is drawn from what is left, renormalised.</item>
/// </list>
/// <para>Reported logprobs are not affected by any of this: they are the log-softmax of the raw model logits
/// (vLLM's default <c>raw_logprobs</c> mode).</para>
/// <para>Record equality compares <see cref="LogitBias"/>, <see cref="StopStrings"/> and
/// <see cref="StopTokenIds"/> by reference.</para>
/// </remarks>
public sealed record SamplingParams
{
    /// <summary>Temperatures at or below this are treated as greedy (as vLLM does), avoiding a divide by ~0.</summary>
    public const float GreedyTemperatureThreshold = 1e-5f;

    /// <summary>Largest <see cref="TopLogprobs"/> accepted (the OpenAI limit).</summary>
    public const int MaxTopLogprobs = 20;

    /// <summary>Bound on the absolute value of a <see cref="LogitBias"/> entry (the OpenAI limit).</summary>
    public const float MaxAbsLogitBias = 100f;

    /// <summary>Bound on the absolute value of <see cref="PresencePenalty"/> and <see cref="FrequencyPenalty"/>.</summary>
    public const float MaxAbsPresenceOrFrequencyPenalty = 2f;

    /// <summary>Greedy decoding with everything else off.</summary>
    public static SamplingParams Greedy { get; } = new() { Temperature = 0f };

    /// <summary>Softmax temperature, &gt;= 0. 0 (or anything &lt;= <see cref="GreedyTemperatureThreshold"/>) means greedy.</summary>
    public float Temperature { get; init; } = 1f;

    /// <summary>Keep only the k most likely tokens; null or 0 = off. Values above the vocabulary size are off.</summary>
    public int? TopK { get; init; }

    /// <summary>Nucleus sampling mass in (0, 1]; 1 = off.</summary>
    public float TopP { get; init; } = 1f;

    /// <summary>Drop tokens with probability below MinP * (top probability); in [0, 1], 0 = off.</summary>
    public float MinP { get; init; }

    /// <summary>Seed for the sampler's own PRNG; the same seed, logits and settings give the same tokens on any
    /// platform. Null = a random seed per sequence.</summary>
    public long? Seed { get; init; }

    /// <summary>HF/vLLM repetition penalty, &gt; 0; 1 = off. For every token that occurs in the prompt or the
    /// output so far, a positive logit is divided by it and a negative logit multiplied by it.</summary>
    public float RepetitionPenalty { get; init; } = 1f;

    /// <summary>OpenAI presence penalty in [-2, 2]: subtracted once from the logit of every token generated so far
    /// (prompt tokens do not count).</summary>
    public float PresencePenalty { get; init; }

    /// <summary>OpenAI frequency penalty in [-2, 2]: subtracted from a token's logit once per time it was
    /// generated so far (prompt tokens do not count).</summary>
    public float FrequencyPenalty { get; init; }

    /// <summary>Token id to value added to its logit, each value in [-100, 100]; null or empty = off.</summary>
    public IReadOnlyDictionary<int, float>? LogitBias { get; init; }

    /// <summary>Most tokens to generate; null = up to the context limit. Enforced by the caller.</summary>
    public int? MaxTokens { get; init; }

    /// <summary>Strings that end generation; the output excludes the stop string. See <see cref="StopStringMatcher"/>.</summary>
    public IReadOnlyList<string>? StopStrings { get; init; }

    /// <summary>Token ids that end generation. Enforced by the caller.</summary>
    public IReadOnlyList<int>? StopTokenIds { get; init; }

    /// <summary>Return the sampled token's logprob to the client.</summary>
    public bool Logprobs { get; init; }

    /// <summary>Number of most likely alternatives to return per position, 0..20; needs <see cref="Logprobs"/>.</summary>
    public int TopLogprobs { get; init; }

    /// <summary>True when decoding is greedy (argmax, no randomness).</summary>
    public bool IsGreedy => Temperature <= GreedyTemperatureThreshold;

    /// <summary>
    /// Every problem with these settings, each naming its field (the property name). Empty when valid.
    /// </summary>
    /// <param name="vocabSize">When given, token ids in <see cref="LogitBias"/> and <see cref="StopTokenIds"/>
    /// are also checked against it.</param>
    public IReadOnlyList<SamplingParamError> GetValidationErrors(int? vocabSize = null)
    {
        var errors = new List<SamplingParamError>();
        void Add(string field, string message) => errors.Add(new SamplingParamError(field, $"{field} {message}"));

        if (!float.IsFinite(Temperature) || Temperature < 0f)
            Add(nameof(Temperature), $"must be a finite number >= 0 (0 = greedy); got {Temperature}.");
        if (TopK is < 0)
            Add(nameof(TopK), $"must be >= 0 (0 or null = off); got {TopK}.");
        if (!(TopP > 0f && TopP <= 1f))
            Add(nameof(TopP), $"must be in (0, 1] (1 = off); got {TopP}.");
        if (!(MinP >= 0f && MinP <= 1f))
            Add(nameof(MinP), $"must be in [0, 1] (0 = off); got {MinP}.");
        if (!float.IsFinite(RepetitionPenalty) || RepetitionPenalty <= 0f)
            Add(nameof(RepetitionPenalty), $"must be a finite number > 0 (1 = off); got {RepetitionPenalty}.");
        if (!(Math.Abs(PresencePenalty) <= MaxAbsPresenceOrFrequencyPenalty))
            Add(nameof(PresencePenalty), $"must be in [-2, 2]; got {PresencePenalty}.");
        if (!(Math.Abs(FrequencyPenalty) <= MaxAbsPresenceOrFrequencyPenalty))
            Add(nameof(FrequencyPenalty), $"must be in [-2, 2]; got {FrequencyPenalty}.");

        if (LogitBias is not null)
        {
            foreach (var (token, bias) in LogitBias)
            {
                if (token < 0 || token >= vocabSize)
                {
                    Add(nameof(LogitBias), vocabSize is int v
                        ? $"has token id {token}, outside the vocabulary [0, {v})."
                        : $"has negative token id {token}.");
                }
                if (!(Math.Abs(bias) <= MaxAbsLogitBias))
                    Add(nameof(LogitBias), $"value for token {token} must be in [-100, 100]; got {bias}.");
            }
        }

        if (MaxTokens is < 1)
            Add(nameof(MaxTokens), $"must be >= 1 when given; got {MaxTokens}.");

        if (StopStrings is not null)
        {
            for (int i = 0; i < StopStrings.Count; i++)
            {
                if (string.IsNullOrEmpty(StopStrings[i]))
                    Add(nameof(StopStrings), $"entry {i} is null or empty.");
            }
        }

        if (StopTokenIds is not null)
        {
            foreach (int token in StopTokenIds)
            {
                if (token < 0 || token >= vocabSize)
                {
                    Add(nameof(StopTokenIds), vocabSize is int v
                        ? $"has token id {token}, outside the vocabulary [0, {v})."
                        : $"has negative token id {token}.");
                }
            }
        }

        if (TopLogprobs < 0 || TopLogprobs > MaxTopLogprobs)
            Add(nameof(TopLogprobs), $"must be in [0, {MaxTopLogprobs}]; got {TopLogprobs}.");
        else if (TopLogprobs > 0 && !Logprobs)
            Add(nameof(TopLogprobs), $"needs {nameof(Logprobs)} = true; got {TopLogprobs} with {nameof(Logprobs)} = false.");

        return errors;
    }

    /// <summary>
    /// Throws <see cref="ArgumentException"/> when the settings are invalid. Its message lists every problem, each
    /// naming its field; its <see cref="ArgumentException.ParamName"/> is the first invalid field.
    /// </summary>
    public void Validate(int? vocabSize = null)
    {
        var errors = GetValidationErrors(vocabSize);
        if (errors.Count > 0)
            throw new ArgumentException(string.Join(" ", errors.Select(e => e.Message)), errors[0].Field);
    }
}

/// <summary>One invalid setting: the property name of <see cref="SamplingParams"/> and a message that starts with it.</summary>
public readonly record struct SamplingParamError(string Field, string Message)
{
    /// <inheritdoc/>
    public override string ToString() => Message;
}
