using System.Globalization;
using MoeServer.Actors.Generation;
using MoeServer.Gateway.OpenAi;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Model;
using MoeServer.Kernels.Sampling;

namespace MoeServer.Gateway.Serving;

/// <summary>
/// Turns the fields of an API request (HTTP or SignalR) into a <see cref="GenerationJob"/>, checking every field
/// against the model. Problems are <see cref="OpenAiException"/>s naming the field as the client spelled it
/// (<paramref name="fieldName"/> maps the snake_case name, e.g. to camelCase for the hub).
/// </summary>
public sealed class GenerationPlanner(ModelConfig config, Func<string, string> fieldName)
{
    public const int MaxChoices = 16;
    public const int MaxStopStrings = 16;

    public static Func<string, string> SnakeCase { get; } = s => s;

    public static Func<string, string> CamelCase { get; } = s =>
    {
        var parts = s.Split('_');
        return parts[0] + string.Concat(parts.Skip(1).Select(p => p.Length == 0 ? p : char.ToUpperInvariant(p[0]) + p[1..]));
    };

    private OpenAiException Invalid(string field, string message) => OpenAiException.Invalid(fieldName(field), $"{fieldName(field)} {message}");

    /// <param name="prompts">Tokenized prompts (at least one).</param>
    /// <param name="maxTokens">max_tokens (or max_completion_tokens) as given.</param>
    public GenerationJob Plan(string requestId, GenerationFields f, IReadOnlyList<int[]> prompts, int? maxTokens,
        bool logprobs, int topLogprobs)
    {
        int n = f.N ?? 1;
        if (n < 1 || n > MaxChoices) throw Invalid("n", $"must be between 1 and {MaxChoices}; got {n}.");
        if (prompts.Count * n > 64) throw Invalid("n", $"asks for {prompts.Count * n} generations (prompts x n); at most 64 per request.");
        if (f.Temperature is { } temp && !(temp >= 0 && temp <= 2)) throw Invalid("temperature", $"must be between 0 and 2; got {F(temp)}.");
        if (f.TopP is { } topP && !(topP > 0 && topP <= 1)) throw Invalid("top_p", $"must be in (0, 1]; got {F(topP)}.");
        if (f.TopK is { } topK && topK < -1) throw Invalid("top_k", $"must be -1 or 0 (off) or a positive number; got {topK}.");
        if (f.MinP is { } minP && !(minP >= 0 && minP <= 1)) throw Invalid("min_p", $"must be in [0, 1]; got {F(minP)}.");
        if (f.PresencePenalty is { } pp && !(pp >= -2 && pp <= 2)) throw Invalid("presence_penalty", $"must be between -2 and 2; got {F(pp)}.");
        if (f.FrequencyPenalty is { } fp && !(fp >= -2 && fp <= 2)) throw Invalid("frequency_penalty", $"must be between -2 and 2; got {F(fp)}.");
        if (f.RepetitionPenalty is { } rp && !(rp > 0 && float.IsFinite(rp))) throw Invalid("repetition_penalty", $"must be a number > 0 (1 = off); got {F(rp)}.");
        double maxTimeout = GenerationRequest.MaxTimeout.TotalSeconds;
        if (f.Timeout is { } to && !(to > 0 && to <= maxTimeout))
            throw Invalid("timeout", $"must be a positive number of seconds, at most {maxTimeout.ToString(CultureInfo.InvariantCulture)}; got {to.ToString(CultureInfo.InvariantCulture)}.");
        if (topLogprobs is < 0 or > SamplingParams.MaxTopLogprobs)
            throw Invalid(logprobs && f is CompletionRequest ? "logprobs" : "top_logprobs", $"must be between 0 and {SamplingParams.MaxTopLogprobs}; got {topLogprobs}.");
        if (f.StreamOptions is not null && f.Stream != true) throw Invalid("stream_options", "is only allowed when stream is true.");

        var stops = f.Stop ?? [];
        if (stops.Count > MaxStopStrings) throw Invalid("stop", $"has {stops.Count} entries; at most {MaxStopStrings}.");
        for (int i = 0; i < stops.Count; i++)
            if (string.IsNullOrEmpty(stops[i])) throw Invalid("stop", $"entry {i} is empty.");
        foreach (int id in f.StopTokenIds ?? [])
            if ((uint)id >= (uint)config.VocabSize) throw Invalid("stop_token_ids", $"has token id {id}, outside the vocabulary (0..{config.VocabSize - 1}).");

        Dictionary<int, float>? bias = null;
        if (f.LogitBias is { Count: > 0 } lb)
        {
            bias = new Dictionary<int, float>(lb.Count);
            foreach (var (key, value) in lb)
            {
                if (!int.TryParse(key, NumberStyles.None, CultureInfo.InvariantCulture, out int id) || id >= config.VocabSize)
                    throw Invalid("logit_bias", $"key \"{key}\" is not a token id of this model (0..{config.VocabSize - 1}).");
                if (!(value >= -100 && value <= 100)) throw Invalid("logit_bias", $"value for token {id} must be between -100 and 100; got {F(value)}.");
                bias[id] = value;
            }
        }

        int ctx = config.MaxPositionEmbeddings;
        foreach (var p in prompts)
        {
            if (p.Length == 0) throw Invalid("prompt", "is empty: it must have at least one token.");
            foreach (int id in p)
                if ((uint)id >= (uint)config.VocabSize) throw Invalid("prompt", $"has token id {id}, outside the vocabulary (0..{config.VocabSize - 1}).");
            if (p.Length >= ctx)
                throw OpenAiException.Invalid(fieldName(f is IChatRequest ? "messages" : "prompt"),
                    $"This model's maximum context length is {ctx} tokens. However, your prompt has {p.Length} tokens; it must leave room for at least one generated token.",
                    "context_length_exceeded");
        }
        if (maxTokens is { } mt)
        {
            if (mt < 1) throw Invalid("max_tokens", $"must be at least 1; got {mt}.");
            int longest = prompts.Max(p => p.Length);
            if ((long)longest + mt > ctx) // long: max_tokens may be int.MaxValue
                throw OpenAiException.Invalid(fieldName("max_tokens"),
                    $"This model's maximum context length is {ctx} tokens. However, you requested {longest + mt} tokens ({longest} in the prompt, {mt} for the completion). Please reduce the prompt or {fieldName("max_tokens")}.",
                    "context_length_exceeded");
        }

        var routing = Routing(f);
        var baseSampling = new SamplingParams
        {
            Temperature = f.Temperature ?? 1f,
            TopP = f.TopP ?? 1f,
            TopK = f.TopK is null or <= 0 ? null : f.TopK,
            MinP = f.MinP ?? 0f,
            RepetitionPenalty = f.RepetitionPenalty ?? 1f,
            PresencePenalty = f.PresencePenalty ?? 0f,
            FrequencyPenalty = f.FrequencyPenalty ?? 0f,
            LogitBias = bias,
            MaxTokens = maxTokens,
            StopStrings = stops.Count == 0 ? null : stops,
            StopTokenIds = f.StopTokenIds is { Count: > 0 } st ? st : null,
            Logprobs = logprobs,
            TopLogprobs = logprobs ? topLogprobs : 0,
        };
        int total = prompts.Count * n;
        var choices = new List<GenerationRequest>(total);
        for (int p = 0; p < prompts.Count; p++)
        {
            for (int i = 0; i < n; i++)
            {
                int index = p * n + i;
                var sampling = baseSampling with { Seed = f.Seed is { } seed ? seed + index : null };
                choices.Add(new GenerationRequest(total == 1 ? requestId : $"{requestId}-{index}", prompts[p], sampling, routing,
                    f.Timeout is { } t ? TimeSpan.FromSeconds(t) : null));
            }
        }
        return new GenerationJob(requestId, choices, n, logprobs, topLogprobs, f.StreamOptions?.IncludeUsage == true);
    }

    private RoutingOverride? Routing(GenerationFields f)
    {
        if (f.TopKExperts is null && f.DisabledExperts is not { Count: > 0 }) return null;
        HashSet<(int, int)>? disabled = null;
        if (f.DisabledExperts is { Count: > 0 } list)
        {
            disabled = [];
            foreach (string item in list)
            {
                var parts = item.Split('.');
                if (parts.Length == 2 && int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out int layer)
                    && int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out int expert))
                {
                    disabled.Add((layer, expert));
                }
                else if (parts.Length == 1 && int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out int e))
                {
                    for (int l = 0; l < config.NumLayers; l++)
                        if (config.IsSparseLayer(l)) disabled.Add((l, e));
                }
                else
                {
                    throw Invalid("disabled_experts", $"entry \"{item}\" is neither \"layer.expert\" nor an expert id.");
                }
            }
        }
        var routing = new RoutingOverride(f.TopKExperts, disabled);
        var errors = routing.GetValidationErrors(config);
        if (errors.Count > 0)
        {
            string field = errors[0].StartsWith("top_k_experts", StringComparison.Ordinal) ? "top_k_experts" : "disabled_experts";
            string message = errors[0].StartsWith(field, StringComparison.Ordinal) ? errors[0][field.Length..].TrimStart(':', ' ') : errors[0];
            throw Invalid(field, message.TrimEnd('.') + ".");
        }
        return routing;
    }

    private static string F(float v) => v.ToString(CultureInfo.InvariantCulture);
}

/// <summary>Marks request types whose prompt is a list of chat messages (errors name "messages").</summary>
public interface IChatRequest;
