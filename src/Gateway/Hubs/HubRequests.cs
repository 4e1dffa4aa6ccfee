using MoeServer.Gateway.OpenAi;
using MoeServer.Gateway.Serving;

namespace MoeServer.Gateway.Hubs;

/// <summary><c>Generate</c>: continue a prompt (text, or token ids). The same fields as /v1/completions in camelCase
/// (<c>maxTokens</c>, <c>temperature</c>, <c>topP</c>, <c>seed</c>, <c>stop</c>, <c>topKExperts</c>,
/// <c>disabledExperts</c>, ...).</summary>
public sealed class GenerateRequest : GenerationFields
{
    public string? Prompt { get; set; }
    public List<int>? PromptTokenIds { get; set; }
    public bool? Logprobs { get; set; }
    public int? TopLogprobs { get; set; }
}

/// <summary><c>Chat</c>: the assistant's reply to <see cref="Messages"/>, rendered with the model's chat template.</summary>
public sealed class ChatRequest : GenerationFields, IChatRequest
{
    public List<ChatMessageDto>? Messages { get; set; }
    /// <summary>Function tools for the chat template (<c>[{"type": "function", "function": {...}}]</c>).</summary>
    public System.Text.Json.JsonElement? Tools { get; set; }
    /// <summary>Extra chat-template variables, e.g. <c>{"enable_thinking": false}</c>.</summary>
    public System.Text.Json.JsonElement? ChatTemplateKwargs { get; set; }
    public bool? Logprobs { get; set; }
    public int? TopLogprobs { get; set; }
}

/// <summary>One piece of a hub stream. The last chunk of each choice has <see cref="FinishReason"/> (and
/// <see cref="Usage"/>); a failed generation ends with finish reason "error" and <see cref="Error"/>.</summary>
public sealed class HubTokenChunk
{
    public string RequestId { get; set; } = "";
    /// <summary>Choice index (0 unless n &gt; 1).</summary>
    public int Index { get; set; }
    /// <summary>The decoded text delta (may be empty while a character or a possible stop string is incomplete).</summary>
    public string Text { get; set; } = "";
    /// <summary>The generated token, or -1 on a final chunk without one.</summary>
    public int TokenId { get; set; } = -1;
    public float? Logprob { get; set; }
    public List<HubTopLogprob>? TopLogprobs { get; set; }
    public string? FinishReason { get; set; }
    public HubUsage? Usage { get; set; }
    public string? Error { get; set; }
    /// <summary>The experts the token was routed to, by layer (empty for dense layers).</summary>
    public int[][]? Experts { get; set; }
}

public sealed class HubTopLogprob
{
    public int TokenId { get; set; }
    public string Token { get; set; } = "";
    public float Logprob { get; set; }
}

public sealed class HubUsage
{
    public int PromptTokens { get; set; }
    public int CompletionTokens { get; set; }
    public int TotalTokens { get; set; }
}
