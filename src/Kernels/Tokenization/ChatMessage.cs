using System.Text.Json;

namespace MoeServer.Kernels.Tokenization;

/// <summary>
/// One chat turn as a chat template sees it (transformers' message dicts): role, content (text, content parts, or
/// none), and for tool use the assistant's tool calls, or a tool result's call id and tool name.
/// </summary>
/// <param name="Role">"system", "user", "assistant", "tool", ...</param>
/// <param name="Content">The text; null with <see cref="Parts"/> or for an assistant turn that only calls tools.</param>
public sealed record ChatMessage(string Role, string? Content)
{
    /// <summary>Content as a list of parts (<c>[{"type": "text", "text": ...}]</c>); when set, templates see this list as <c>content</c>.</summary>
    public IReadOnlyList<ChatContentPart>? Parts { get; init; }

    /// <summary>The assistant's reasoning (<c>reasoning_content</c>), which thinking templates (Qwen3) render.</summary>
    public string? ReasoningContent { get; init; }

    /// <summary>The assistant's tool calls (<c>tool_calls</c>).</summary>
    public IReadOnlyList<ChatToolCall>? ToolCalls { get; init; }

    /// <summary>For a tool result: the id of the call it answers (<c>tool_call_id</c>).</summary>
    public string? ToolCallId { get; init; }

    /// <summary>For a tool result: the tool's name (<c>name</c>); otherwise an optional participant name.</summary>
    public string? Name { get; init; }
}

/// <summary>One content part: <c>{"type": Type, "text": Text}</c> (Text null for non-text parts).</summary>
public sealed record ChatContentPart(string Type, string? Text);

/// <summary>
/// A tool call as templates see it: <c>{"id": Id, "type": "function", "function": {"name": Name, "arguments": Arguments}}</c>.
/// Arguments is a JSON object (OpenAI clients send a JSON string, which the gateway parses, as vLLM and transformers
/// users do) or, when it is not valid JSON, a JSON string.
/// </summary>
public sealed record ChatToolCall(string? Id, string Name, JsonElement Arguments);
