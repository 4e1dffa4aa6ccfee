using System.Text.Json;
using System.Text.Json.Serialization;

namespace MoeServer.Gateway.OpenAi;

/// <summary>Fields that /v1/completions and /v1/chat/completions share: sampling, limits, streaming and the MoE
/// extras. Names are the OpenAI / vLLM ones (snake_case on the wire).</summary>
public class GenerationFields
{
    public string? Model { get; set; }
    public int? MaxTokens { get; set; }
    public float? Temperature { get; set; }
    public float? TopP { get; set; }
    /// <summary>vLLM: -1 or 0 = off.</summary>
    public int? TopK { get; set; }
    public float? MinP { get; set; }
    public long? Seed { get; set; }
    /// <summary>A string or a list of strings.</summary>
    [JsonConverter(typeof(StringOrListConverter))]
    public List<string>? Stop { get; set; }
    /// <summary>vLLM extra: token ids that end generation.</summary>
    public List<int>? StopTokenIds { get; set; }
    public int? N { get; set; }
    public float? PresencePenalty { get; set; }
    public float? FrequencyPenalty { get; set; }
    public float? RepetitionPenalty { get; set; }
    /// <summary>Token id (as a string key) to a bias in [-100, 100].</summary>
    public Dictionary<string, float>? LogitBias { get; set; }
    public bool? Stream { get; set; }
    public StreamOptions? StreamOptions { get; set; }
    /// <summary>Seconds from arrival; past it the generation ends with an error.</summary>
    public double? Timeout { get; set; }
    /// <summary>MoE extra: experts per token for this request (SMoE-Dropout / AdapMoE style).</summary>
    public int? TopKExperts { get; set; }
    /// <summary>MoE extra: experts switched off for this request (MoTE style): "layer.expert" strings, or expert ids
    /// (that expert in every sparse layer; numbers or strings).</summary>
    [JsonConverter(typeof(ExpertListConverter))]
    public List<string>? DisabledExperts { get; set; }
    public string? User { get; set; }
}

public sealed class StreamOptions
{
    public bool? IncludeUsage { get; set; }
}

/// <summary>POST /v1/completions.</summary>
public sealed class CompletionRequest : GenerationFields
{
    /// <summary>A string, a list of strings, a list of token ids, or a list of token-id lists.</summary>
    public JsonElement? Prompt { get; set; }
    /// <summary>Number of top alternatives per position to return (0..20); null = no logprobs.</summary>
    public int? Logprobs { get; set; }
    public bool? Echo { get; set; }
    public string? Suffix { get; set; }
    public int? BestOf { get; set; }
}

/// <summary>POST /v1/chat/completions.</summary>
public sealed class ChatCompletionRequest : GenerationFields, Serving.IChatRequest
{
    public List<ChatMessageDto>? Messages { get; set; }
    public int? MaxCompletionTokens { get; set; }
    public bool? Logprobs { get; set; }
    public int? TopLogprobs { get; set; }
    /// <summary>Function tools, passed to the chat template as <c>tools</c> (the model's reply is not parsed into tool calls).</summary>
    public JsonElement? Tools { get; set; }
    public JsonElement? ToolChoice { get; set; }
    /// <summary>Extra chat-template variables (vLLM's <c>chat_template_kwargs</c>), e.g. <c>{"enable_thinking": false}</c>.</summary>
    public JsonElement? ChatTemplateKwargs { get; set; }
    public JsonElement? ResponseFormat { get; set; }
}

public sealed class ChatMessageDto
{
    public string? Role { get; set; }
    /// <summary>A string or a list of content parts ({"type":"text","text":...}), read as their text.</summary>
    [JsonConverter(typeof(MessageContentConverter))]
    public string? Content { get; set; }
    public string? Name { get; set; }
    /// <summary>An assistant message's tool calls.</summary>
    public List<ToolCallDto>? ToolCalls { get; set; }
    /// <summary>A tool message: the id of the call it answers.</summary>
    public string? ToolCallId { get; set; }
    /// <summary>An assistant message's reasoning, for templates that render it (Qwen3).</summary>
    public string? ReasoningContent { get; set; }
}

/// <summary>One tool call of an assistant message: <c>{"id", "type": "function", "function": {"name", "arguments"}}</c>.</summary>
public sealed class ToolCallDto
{
    public string? Id { get; set; }
    public string? Type { get; set; }
    public ToolCallFunctionDto? Function { get; set; }
}

public sealed class ToolCallFunctionDto
{
    public string? Name { get; set; }
    /// <summary>A JSON string (as OpenAI sends it) or a JSON object.</summary>
    public JsonElement? Arguments { get; set; }
}
