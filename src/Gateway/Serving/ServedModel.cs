using System.Text.Json;
using MoeServer.Actors.Generation;
using MoeServer.Gateway.OpenAi;
using MoeServer.Gateway.Options;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Formats;
using MoeServer.Kernels.Tokenization;

namespace MoeServer.Gateway.Serving;

/// <summary>The model this gateway serves, as the API sees it: its name, tokenizer, chat template and engine.</summary>
public sealed class ServedModel
{
    public ServedModel(MoeEngine engine, string modelDir, GatewayOptions options)
    {
        Engine = engine;
        Config = engine.Config;
        Tokenizer = engine.Tokenizer;
        Name = options.ServedModelName is { Length: > 0 } n ? n : ModelSourceInfo.DisplayName(modelDir);
        Source = ModelSourceInfo.Describe(modelDir, Config);
        try
        {
            ChatTemplate = ModelChatTemplate.Load(modelDir, options.ChatTemplate is { Length: > 0 } t ? t : null);
        }
        catch (Exception e) when (e is ChatTemplateException or InvalidDataException or FileNotFoundException)
        {
            ChatTemplateProblem = e.Message;
        }
        Tokens = new TokenText(Tokenizer);
        Created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
    }

    public MoeEngine Engine { get; }
    public ModelConfig Config { get; }
    public ITokenizer Tokenizer { get; }
    public string Name { get; }
    /// <summary>The model's source format and metadata (/v1/models).</summary>
    public ModelSourceInfo Source { get; }
    public ChatTemplate? ChatTemplate { get; }
    /// <summary>Why there is no chat template (chat requests get this as a 400).</summary>
    public string? ChatTemplateProblem { get; }
    internal TokenText Tokens { get; }
    public long Created { get; }

    /// <summary>400 model_not_found unless <paramref name="requested"/> is empty or this model's name.</summary>
    public void CheckModel(string? requested, Func<string, string> fieldName)
    {
        if (string.IsNullOrEmpty(requested) || requested == Name) return;
        throw OpenAiException.Invalid(fieldName("model"), $"The model `{requested}` does not exist; this server serves `{Name}`.", "model_not_found");
    }

    /// <summary>
    /// Renders chat messages (with tool calls and tool results) and the request's tools and template kwargs with the
    /// model's chat template, and tokenizes the text. Invalid messages, and templates that refuse or fail, are 400s.
    /// </summary>
    public int[] EncodeChat(IReadOnlyList<ChatMessageDto>? messages, Func<string, string> fieldName, bool addGenerationPrompt = true,
        object? tools = null, object? templateKwargs = null)
    {
        string field = fieldName("messages");
        List<ChatMessage> list = ChatMessages(messages, field, fieldName);
        IReadOnlyList<JsonElement>? toolList = Tools(Json(tools, fieldName("tools")), fieldName("tools"));
        Dictionary<string, object?>? kwargs = TemplateKwargs(Json(templateKwargs, fieldName("chat_template_kwargs")), fieldName("chat_template_kwargs"));
        if (ChatTemplate is null) throw OpenAiException.Invalid(field, $"this model has no chat template ({ChatTemplateProblem}); use /v1/completions.");
        string text;
        try
        {
            text = ChatTemplate.Render(list, addGenerationPrompt, toolList, kwargs);
        }
        catch (ChatTemplateException e)
        {
            throw OpenAiException.Invalid(field, $"the chat template refused the messages: {e.Message}");
        }
        return Tokenizer.Encode(text, parseSpecialTokens: true);
    }

    private static List<ChatMessage> ChatMessages(IReadOnlyList<ChatMessageDto>? messages, string field, Func<string, string> fieldName)
    {
        if (messages is null || messages.Count == 0) throw OpenAiException.Invalid(field, $"{field} must be a non-empty list of messages.");
        var list = new List<ChatMessage>(messages.Count);
        var callNames = new Dictionary<string, string>(StringComparer.Ordinal);
        for (int i = 0; i < messages.Count; i++)
        {
            var m = messages[i];
            string at = $"{field}[{i}]";
            if (m is null) throw OpenAiException.Invalid(at, $"{at} is null.");
            if (m.Role is not ("system" or "user" or "assistant" or "developer" or "tool"))
                throw OpenAiException.Invalid($"{at}.role", $"{at}.role must be one of system, developer, user, assistant, tool; got {(m.Role is null ? "nothing" : $"\"{m.Role}\"")}.");
            List<ChatToolCall>? calls = null;
            if (m.ToolCalls is { Count: > 0 })
            {
                string callsField = $"{at}.{fieldName("tool_calls")}";
                if (m.Role != "assistant") throw OpenAiException.Invalid(callsField, $"{callsField}: only assistant messages carry tool calls.");
                calls = new List<ChatToolCall>(m.ToolCalls.Count);
                for (int k = 0; k < m.ToolCalls.Count; k++)
                {
                    calls.Add(ToolCall(m.ToolCalls[k], $"{callsField}[{k}]"));
                    if (calls[k].Id is { } id) callNames[id] = calls[k].Name;
                }
            }
            string? toolCallId = m.ToolCallId;
            if (m.Role == "tool" && string.IsNullOrEmpty(toolCallId))
                throw OpenAiException.Invalid($"{at}.{fieldName("tool_call_id")}", $"{at}.{fieldName("tool_call_id")} is required for a tool message.");
            if (m.Content is null && calls is null) throw OpenAiException.Invalid($"{at}.content", $"{at}.content is missing.");
            string? name = m.Name;
            if (m.Role == "tool" && name is null && callNames.TryGetValue(toolCallId!, out string? callName)) name = callName;
            list.Add(new ChatMessage(m.Role == "developer" ? "system" : m.Role, m.Content)
            {
                ToolCalls = calls,
                ToolCallId = m.Role == "tool" ? toolCallId : null,
                Name = name,
                ReasoningContent = m.ReasoningContent,
            });
        }
        return list;
    }

    /// <summary>A request's free-form value as JSON (a JsonElement over HTTP and the hub's JSON protocol, maps over MessagePack).</summary>
    private static JsonElement? Json(object? value, string field)
    {
        try
        {
            return JsonValues.ToElement(value);
        }
        catch (JsonException e)
        {
            throw OpenAiException.Invalid(field, $"{field} must be JSON values: {e.Message}");
        }
    }

    private static ChatToolCall ToolCall(ToolCallDto? c, string at)
    {
        if (c is null) throw OpenAiException.Invalid(at, $"{at} is null.");
        if (c.Type is not (null or "function")) throw OpenAiException.Invalid($"{at}.type", $"{at}.type must be \"function\"; got \"{c.Type}\".");
        if (c.Function?.Name is not { Length: > 0 } name) throw OpenAiException.Invalid($"{at}.function.name", $"{at}.function.name is required.");
        JsonElement arguments;
        switch (Json(c.Function.Arguments, $"{at}.function.arguments"))
        {
            case null or { ValueKind: JsonValueKind.Null }:
                arguments = JsonSerializer.SerializeToElement(new Dictionary<string, object>());
                break;
            case { ValueKind: JsonValueKind.Object } o:
                arguments = o;
                break;
            case { ValueKind: JsonValueKind.String } s:
                // OpenAI sends arguments as a JSON string; templates expect the object (as vLLM passes it).
                try
                {
                    string text = JsonText.Of(s, $"{at}.function.arguments");
                    using var doc = JsonDocument.Parse(text.Length == 0 ? "{}" : text);
                    if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new JsonException("not an object");
                    arguments = doc.RootElement.Clone();
                }
                catch (JsonException)
                {
                    throw OpenAiException.Invalid($"{at}.function.arguments", $"{at}.function.arguments must be a JSON object (or a string holding one).");
                }
                break;
            default:
                throw OpenAiException.Invalid($"{at}.function.arguments", $"{at}.function.arguments must be a JSON object (or a string holding one).");
        }
        return new ChatToolCall(c.Id, name, arguments);
    }

    private static List<JsonElement>? Tools(JsonElement? tools, string field)
    {
        if (tools is null || tools.Value.ValueKind == JsonValueKind.Null) return null;
        if (tools.Value.ValueKind != JsonValueKind.Array) throw OpenAiException.Invalid(field, $"{field} must be a list of function tools.");
        var list = new List<JsonElement>();
        int i = 0;
        foreach (var t in tools.Value.EnumerateArray())
        {
            string at = $"{field}[{i++}]";
            if (t.ValueKind != JsonValueKind.Object || !t.TryGetProperty("type", out var type) || type.ValueKind != JsonValueKind.String || !type.ValueEquals("function"))
                throw OpenAiException.Invalid(field, $"{at} must be an object with \"type\": \"function\".");
            if (!t.TryGetProperty("function", out var fn) || fn.ValueKind != JsonValueKind.Object
                || !fn.TryGetProperty("name", out var name) || name.ValueKind != JsonValueKind.String || name.ValueEquals(""))
                throw OpenAiException.Invalid(field, $"{at}.function.name is required.");
            list.Add(t);
        }
        return list.Count == 0 ? null : list;
    }

    private static readonly HashSet<string> Reserved = new(StringComparer.Ordinal) { "messages", "tools", "add_generation_prompt" };

    private static Dictionary<string, object?>? TemplateKwargs(JsonElement? kwargs, string field)
    {
        if (kwargs is null || kwargs.Value.ValueKind == JsonValueKind.Null) return null;
        if (kwargs.Value.ValueKind != JsonValueKind.Object) throw OpenAiException.Invalid(field, $"{field} must be an object of template variables.");
        var d = new Dictionary<string, object?>(StringComparer.Ordinal);
        foreach (var p in kwargs.Value.EnumerateObject())
        {
            if (Reserved.Contains(p.Name)) throw OpenAiException.Invalid(field, $"{field} cannot set \"{p.Name}\"; it comes from the request itself.");
            d[p.Name] = p.Value;
        }
        return d;
    }
}
