using System.Text.Json;
using MoeServer.Kernels.Jinja;

namespace MoeServer.Kernels.Tokenization;

/// <summary>
/// A model's Jinja chat template, rendered by <see cref="JinjaTemplate"/> exactly as transformers'
/// <c>apply_chat_template</c> renders it (jinja2 sandbox, trim_blocks, lstrip_blocks; checked against python3-jinja2 by
/// golden tests). Any template in the supported Jinja subset works (docs/chat-templates.md), tools included.
/// </summary>
public sealed class ChatTemplate
{
    /// <summary>Name of the transformers tokenizer settings file holding <c>chat_template</c>.</summary>
    public const string ConfigFileName = "tokenizer_config.json";

    /// <summary>Name of the standalone template file newer transformers versions write.</summary>
    public const string JinjaFileName = "chat_template.jinja";

    private static readonly HashSet<string> ReservedVariables = new(StringComparer.Ordinal) { "messages", "tools", "add_generation_prompt" };

    private readonly JinjaTemplate _compiled;
    private ChatTemplate? _toolUse;

    /// <summary>Override names and the templates they stand for.</summary>
    public static IReadOnlyDictionary<string, string> BuiltInOverrides { get; } =
        new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase)
        {
            ["chatml"] = ChatTemplates.ChatMlJinja,
            ["qwen"] = ChatTemplates.ChatMlJinja,
            ["chatml-plain"] = ChatTemplates.ChatMlPlainJinja,
            ["mistral"] = ChatTemplates.MistralInstJinja,
            ["mixtral"] = ChatTemplates.MistralInstJinja,
            ["mistral-v0"] = ChatTemplates.MistralInstV0Jinja,
        };

    private const string Hint =
        "Pass a chat template override: \"chatml\", \"chatml-plain\", \"mistral\", \"mistral-v0\" or a path to a Jinja template file.";

    private ChatTemplate(string template, string source, string? bosToken, string? eosToken, JinjaTemplate compiled)
    {
        Template = template;
        Source = source;
        BosToken = bosToken;
        EosToken = eosToken;
        _compiled = compiled;
    }

    /// <summary>The Jinja source.</summary>
    public string Template { get; }

    /// <summary>Where the template came from (file path, override name, "GGUF tokenizer.chat_template", ...).</summary>
    public string Source { get; }

    /// <summary>The bos_token the template is rendered with (null: undefined in the template, as transformers leaves it).</summary>
    public string? BosToken { get; }

    /// <summary>The eos_token the template is rendered with.</summary>
    public string? EosToken { get; }

    /// <summary>
    /// The "tool_use" entry of a tokenizer_config.json template list, which transformers renders instead of the
    /// "default" one whenever tools are passed; null when there is none.
    /// </summary>
    public string? ToolUseTemplate => _toolUse?.Template;

    /// <summary>
    /// Loads the chat template of a model directory: the override when given, otherwise
    /// tokenizer_config.json's <c>chat_template</c> (a string, or a list of {name, template}: "default"),
    /// otherwise chat_template.jinja. bos/eos tokens come from tokenizer_config.json.
    /// </summary>
    public static ChatTemplate Load(string modelDir, string? overrideName = null)
    {
        ArgumentNullException.ThrowIfNull(modelDir);
        string configPath = Path.GetFullPath(Path.Combine(modelDir, ConfigFileName));
        string? bos = null;
        string? eos = null;
        string? template = null;
        string? toolUseTemplate = null;
        string? templateSource = null;
        if (File.Exists(configPath))
        {
            try
            {
                using JsonDocument doc = JsonDocument.Parse(File.ReadAllText(configPath), new JsonDocumentOptions { AllowTrailingCommas = true });
                JsonElement root = doc.RootElement;
                if (root.ValueKind != JsonValueKind.Object)
                {
                    throw new InvalidDataException($"{configPath}: expected a JSON object.");
                }

                bos = HfTokenizer.ReadTokenSetting(root, "bos_token");
                eos = HfTokenizer.ReadTokenSetting(root, "eos_token");
                if (root.TryGetProperty("chat_template", out JsonElement ct))
                {
                    (template, toolUseTemplate) = ReadTemplateSetting(ct, configPath);
                    templateSource = configPath;
                }
            }
            catch (JsonException ex)
            {
                throw new InvalidDataException($"{configPath}: invalid JSON: {ex.Message}", ex);
            }
        }

        if (overrideName is not null)
        {
            return FromOverride(overrideName, bos, eos);
        }

        if (template is null)
        {
            string jinjaPath = Path.GetFullPath(Path.Combine(modelDir, JinjaFileName));
            if (File.Exists(jinjaPath))
            {
                template = File.ReadAllText(jinjaPath);
                templateSource = jinjaPath;
            }
        }

        if (template is null)
        {
            throw new ChatTemplateException(
                $"No chat template found: {configPath} has no \"chat_template\" and there is no {JinjaFileName}. {Hint}");
        }

        ChatTemplate loaded = FromJinja(template, bos, eos, templateSource!);
        if (toolUseTemplate is not null)
        {
            loaded._toolUse = FromJinja(toolUseTemplate, bos, eos, $"{templateSource} (tool_use)");
        }

        return loaded;
    }

    /// <summary>
    /// A template chosen explicitly: a built-in name (see <see cref="BuiltInOverrides"/>) or a path to a
    /// file holding a Jinja template of a supported family. bos/eos default to "&lt;s&gt;"/"&lt;/s&gt;".
    /// </summary>
    public static ChatTemplate FromOverride(string nameOrPath, string? bosToken = null, string? eosToken = null)
    {
        ArgumentNullException.ThrowIfNull(nameOrPath);
        bosToken ??= "<s>";
        eosToken ??= "</s>";
        if (BuiltInOverrides.TryGetValue(nameOrPath, out string? builtIn))
        {
            return FromJinja(builtIn, bosToken, eosToken, $"override '{nameOrPath}'");
        }

        if (File.Exists(nameOrPath))
        {
            return FromJinja(File.ReadAllText(nameOrPath), bosToken, eosToken, Path.GetFullPath(nameOrPath));
        }

        throw new ChatTemplateException(
            $"Unknown chat template override '{nameOrPath}': not one of {string.Join(", ", BuiltInOverrides.Keys.Select(k => $"\"{k}\""))} and no such file.");
    }

    /// <summary>
    /// Parses a Jinja chat template (from tokenizer_config.json, chat_template.jinja, a GGUF file's
    /// <c>tokenizer.chat_template</c>, or an override).
    /// </summary>
    /// <exception cref="ChatTemplateException">A syntax error or a construct outside the supported subset, naming it and its line.</exception>
    public static ChatTemplate FromJinja(string template, string? bosToken, string? eosToken, string source = "chat template")
    {
        ArgumentNullException.ThrowIfNull(template);
        try
        {
            return new ChatTemplate(template, source, bosToken, eosToken, JinjaTemplate.Parse(template));
        }
        catch (JinjaException e)
        {
            throw new ChatTemplateException($"Chat template in {source} cannot be used: {e.Message}. {Hint}", e);
        }
    }

    /// <summary>
    /// Renders the conversation with the variables transformers passes: <c>messages</c>, <c>tools</c> (none without
    /// tools), <c>documents</c> (none), <c>add_generation_prompt</c>, <c>bos_token</c>, <c>eos_token</c>, and
    /// <paramref name="variables"/> (extra template kwargs such as <c>enable_thinking</c>; JSON values, strings, numbers,
    /// booleans, lists and dictionaries).
    /// </summary>
    /// <exception cref="ChatTemplateException">
    /// The template refused the conversation (<c>raise_exception</c>: the message is the template's own) or failed
    /// while rendering it (undefined value used, type error), naming the template line.
    /// </exception>
    public string Render(
        IReadOnlyList<ChatMessage> messages,
        bool addGenerationPrompt,
        IReadOnlyList<JsonElement>? tools = null,
        IReadOnlyDictionary<string, object?>? variables = null,
        Func<DateTime>? now = null)
    {
        ArgumentNullException.ThrowIfNull(messages);
        if (tools is not null && _toolUse is not null)
        {
            return _toolUse.Render(messages, addGenerationPrompt, tools, variables, now);
        }

        var vars = new Dictionary<string, object?>(StringComparer.Ordinal)
        {
            ["messages"] = messages.Select(ToTemplateValue).ToList(),
            ["tools"] = tools?.Select(t => (object?)t).ToList(),
            ["documents"] = null,
            ["add_generation_prompt"] = addGenerationPrompt,
        };
        if (BosToken is not null)
        {
            vars["bos_token"] = BosToken;
        }

        if (EosToken is not null)
        {
            vars["eos_token"] = EosToken;
        }

        if (variables is not null)
        {
            foreach (KeyValuePair<string, object?> kv in variables)
            {
                if (ReservedVariables.Contains(kv.Key))
                {
                    throw new ArgumentException($"the template variable '{kv.Key}' is set by ChatTemplate.Render itself", nameof(variables));
                }

                vars[kv.Key] = kv.Value;
            }
        }

        try
        {
            return _compiled.Render(vars, now);
        }
        catch (JinjaException e) when (e.Kind == JinjaErrorKind.Raised)
        {
            throw new ChatTemplateException(e.Message, e);
        }
        catch (JinjaException e)
        {
            throw new ChatTemplateException($"{Source}: the chat template failed: {e.Message}", e);
        }
    }

    /// <summary>The message as the dict transformers' templates read: role, content, then the optional keys that are set.</summary>
    private static Dictionary<string, object?> ToTemplateValue(ChatMessage m)
    {
        var d = new Dictionary<string, object?>(StringComparer.Ordinal)
        {
            ["role"] = m.Role,
            ["content"] = m.Parts is not null
                ? m.Parts.Select(p => (object?)(p.Text is null
                    ? new Dictionary<string, object?> { ["type"] = p.Type }
                    : new Dictionary<string, object?> { ["type"] = p.Type, ["text"] = p.Text })).ToList()
                : m.Content,
        };
        if (m.ReasoningContent is not null)
        {
            d["reasoning_content"] = m.ReasoningContent;
        }

        if (m.ToolCalls is not null)
        {
            d["tool_calls"] = m.ToolCalls.Select(c =>
            {
                var call = new Dictionary<string, object?>(StringComparer.Ordinal);
                if (c.Id is not null)
                {
                    call["id"] = c.Id;
                }

                call["type"] = "function";
                call["function"] = new Dictionary<string, object?>(StringComparer.Ordinal) { ["name"] = c.Name, ["arguments"] = c.Arguments };
                return (object?)call;
            }).ToList();
        }

        if (m.ToolCallId is not null)
        {
            d["tool_call_id"] = m.ToolCallId;
        }

        if (m.Name is not null)
        {
            d["name"] = m.Name;
        }

        return d;
    }

    /// <summary>chat_template: a string, or transformers' list of {name, template} ("default", and "tool_use" for requests with tools).</summary>
    private static (string? Default, string? ToolUse) ReadTemplateSetting(JsonElement ct, string configPath)
    {
        switch (ct.ValueKind)
        {
            case JsonValueKind.Null:
                return (null, null);
            case JsonValueKind.String:
                return (ct.GetString(), null);
            case JsonValueKind.Array:
                string? def = null, toolUse = null;
                foreach (JsonElement item in ct.EnumerateArray())
                {
                    if (item.ValueKind == JsonValueKind.Object
                        && item.TryGetProperty("name", out JsonElement n) && n.ValueKind == JsonValueKind.String
                        && item.TryGetProperty("template", out JsonElement tpl) && tpl.ValueKind == JsonValueKind.String)
                    {
                        if (n.GetString() == "default")
                        {
                            def ??= tpl.GetString();
                        }
                        else if (n.GetString() == "tool_use")
                        {
                            toolUse ??= tpl.GetString();
                        }
                    }
                }

                return def is not null ? (def, toolUse)
                    : throw new ChatTemplateException($"{configPath}: chat_template is a list without a \"default\" entry. {Hint}");
            default:
                throw new InvalidDataException($"{configPath}: chat_template must be a string or a list of {{name, template}}.");
        }
    }
}
