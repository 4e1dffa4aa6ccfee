using System.Text.Json;
using MoeServer.Kernels.Tokenization;

namespace MoeServer.Kernels.Tests.Jinja;

/// <summary>Reads a golden conversation's message (transformers' dict shape) into a <see cref="ChatMessage"/>.</summary>
internal static class ChatMessageJson
{
    public static ChatMessage Parse(JsonElement m)
    {
        string role = m.GetProperty("role").GetString()!;
        JsonElement content = m.GetProperty("content");
        var msg = new ChatMessage(role, content.ValueKind == JsonValueKind.String ? content.GetString() : null)
        {
            Parts = content.ValueKind == JsonValueKind.Array
                ? content.EnumerateArray().Select(p => new ChatContentPart(p.GetProperty("type").GetString()!, p.TryGetProperty("text", out JsonElement t) ? t.GetString() : null)).ToList()
                : null,
            ReasoningContent = m.TryGetProperty("reasoning_content", out JsonElement r) ? r.GetString() : null,
            ToolCalls = m.TryGetProperty("tool_calls", out JsonElement calls)
                ? calls.EnumerateArray().Select(c => new ChatToolCall(
                    c.TryGetProperty("id", out JsonElement id) ? id.GetString() : null,
                    c.GetProperty("function").GetProperty("name").GetString()!,
                    c.GetProperty("function").GetProperty("arguments").Clone())).ToList()
                : null,
            ToolCallId = m.TryGetProperty("tool_call_id", out JsonElement tc) ? tc.GetString() : null,
            Name = m.TryGetProperty("name", out JsonElement n) ? n.GetString() : null,
        };
        return msg;
    }
}
