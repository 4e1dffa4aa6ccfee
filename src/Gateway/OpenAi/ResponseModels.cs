using System.Text.Json.Serialization;

namespace MoeServer.Gateway.OpenAi;

// Response bodies in OpenAI's shapes (snake_case through OpenAiJson). Fields OpenAI always sends, null or not,
// are marked Never-ignore.

public sealed record Usage(int PromptTokens, int CompletionTokens, int TotalTokens, PromptTokensDetails? PromptTokensDetails = null);

/// <summary>OpenAI's <c>prompt_tokens_details</c>: prompt tokens served from the prefix cache.</summary>
public sealed record PromptTokensDetails(int CachedTokens);

public sealed record CompletionResponse(
    string Id,
    string Object,
    long Created,
    string Model,
    IReadOnlyList<CompletionChoice> Choices,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.Never)] Usage? Usage);

public sealed record CompletionChoice(
    int Index,
    string Text,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.Never)] CompletionLogprobs? Logprobs,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.Never)] string? FinishReason);

/// <summary>Legacy completions logprobs: parallel lists per generated token.</summary>
public sealed record CompletionLogprobs(
    List<string> Tokens,
    List<float> TokenLogprobs,
    List<Dictionary<string, float>?> TopLogprobs,
    List<int> TextOffset);

public sealed record ChatCompletionResponse(
    string Id,
    string Object,
    long Created,
    string Model,
    IReadOnlyList<ChatChoice> Choices,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.Never)] Usage? Usage);

public sealed record ChatChoice(
    int Index,
    ChatMessageOut Message,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.Never)] ChatLogprobs? Logprobs,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.Never)] string? FinishReason);

public sealed record ChatMessageOut(string Role, [property: JsonIgnore(Condition = JsonIgnoreCondition.Never)] string? Content);

public sealed record ChatLogprobs(List<ChatTokenLogprob> Content);

public sealed record ChatTokenLogprob(string Token, float Logprob, int[] Bytes, IReadOnlyList<ChatTopLogprob> TopLogprobs);

public sealed record ChatTopLogprob(string Token, float Logprob, int[] Bytes);

public sealed record ChatCompletionChunk(
    string Id,
    string Object,
    long Created,
    string Model,
    IReadOnlyList<ChatChunkChoice> Choices,
    Usage? Usage);

public sealed record ChatChunkChoice(
    int Index,
    ChatDelta Delta,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.Never)] ChatLogprobs? Logprobs,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.Never)] string? FinishReason);

public sealed record ChatDelta(string? Role, string? Content);

public sealed record ModelList(string Object, IReadOnlyList<ModelCard> Data);

public sealed record ModelCard(string Id, string Object, long Created, string OwnedBy, int MaxModelLen, string Root,
    int NumExperts, int NumExpertsPerToken, int NumLayers, string Architecture, ModelSourceCard Source);

/// <summary>Where the model came from: format <c>safetensors</c> or <c>gguf</c>, the source's own architecture name,
/// its context length, the GGUF file type, and the files.</summary>
public sealed record ModelSourceCard(string Format, string Architecture, int ContextLength,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.Never)] string? FileType, IReadOnlyList<string> Files);

public sealed record TokenizeRequest(string? Model, string? Prompt, List<ChatMessageDto>? Messages, bool? AddGenerationPrompt, System.Text.Json.JsonElement? Tools = null, System.Text.Json.JsonElement? ChatTemplateKwargs = null);

public sealed record TokenizeResponse(IReadOnlyList<int> Tokens, int Count, int MaxModelLen);

public sealed record DetokenizeRequest(string? Model, List<int>? Tokens);

public sealed record DetokenizeResponse(string Prompt);
