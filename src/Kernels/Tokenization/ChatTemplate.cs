using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace MoeServer.Kernels.Tokenization;

/// <summary>The chat-template families <see cref="ChatTemplate"/> can render.</summary>
public enum ChatTemplateFamily
{
    /// <summary>ChatML (<c>&lt;|im_start|&gt;role\ncontent&lt;|im_end|&gt;\n</c>), optionally with Qwen's default system message.</summary>
    ChatMl,

    /// <summary>Mistral/Mixtral <c>[INST] ... [/INST]</c> alternation.</summary>
    MistralInst,
}

/// <summary>
/// A chat template recognised from its Jinja source by fingerprint and rendered natively, producing
/// exactly what the Jinja template renders (under transformers' settings: trim_blocks, lstrip_blocks).
/// Recognised: ChatML (plain, Qwen1.5/Qwen2 with the in-loop default system message, Qwen2.5 with the
/// default system header and tools section, for conversations without tools) and the Mistral/Mixtral
/// instruct templates (v0 without system support, v1 with the system message folded into a user turn).
/// Anything else throws <see cref="ChatTemplateException"/> naming the template; use an override then.
/// </summary>
public sealed partial class ChatTemplate
{
    /// <summary>Name of the transformers tokenizer settings file holding <c>chat_template</c>.</summary>
    public const string ConfigFileName = "tokenizer_config.json";

    /// <summary>Name of the standalone template file newer transformers versions write.</summary>
    public const string JinjaFileName = "chat_template.jinja";

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
        "Pass a chat template override: \"chatml\", \"chatml-plain\", \"mistral\", \"mistral-v0\" or a path to a file holding a supported Jinja template.";

    private const string ImStart = "<|im_start|>";
    private const string ImEnd = "<|im_end|>";

    // ChatML parameters.
    private ChatMlVariant _chatMl;
    private bool _hasGenerationPrompt;

    // Mistral parameters.
    private bool _mistralHasSystem;
    private bool _mistralSystemOnLast;
    private string _userOpen = string.Empty;
    private string _userClose = string.Empty;
    private string _systemOpen = string.Empty;
    private string _systemSeparator = string.Empty;
    private string _systemClose = string.Empty;
    private string _assistantPrefix = string.Empty;
    private string? _eosLiteral;
    private string _alternationError = string.Empty;
    private string _rolesError = string.Empty;

    private ChatTemplate(string template, string source, string? bosToken, string? eosToken)
    {
        Template = template;
        Source = source;
        BosToken = bosToken;
        EosToken = eosToken;
    }

    private enum ChatMlVariant
    {
        Plain,
        DefaultSystemInLoop,
        DefaultSystemHeader,
    }

    /// <summary>The recognised family.</summary>
    public ChatTemplateFamily Family { get; private set; }

    /// <summary>The Jinja source.</summary>
    public string Template { get; }

    /// <summary>Where the template came from (file path or override name).</summary>
    public string Source { get; }

    /// <summary>The bos_token the template is rendered with (null renders as empty).</summary>
    public string? BosToken { get; }

    /// <summary>The eos_token the template is rendered with.</summary>
    public string? EosToken { get; }

    /// <summary>The default system message a ChatML (Qwen) template inserts, if any.</summary>
    public string? DefaultSystemMessage { get; private set; }

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
                    template = ReadTemplateSetting(ct, configPath);
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

        return FromJinja(template, bos, eos, templateSource!);
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

    /// <summary>Recognises a Jinja template; throws <see cref="ChatTemplateException"/> naming it when unsupported.</summary>
    public static ChatTemplate FromJinja(string template, string? bosToken, string? eosToken, string source = "chat template")
    {
        ArgumentNullException.ThrowIfNull(template);
        var t = new ChatTemplate(template, source, bosToken, eosToken);
        string? reason = t.Recognise();
        if (reason is not null)
        {
            string head = template.Length > 80 ? template[..80] + "…" : template;
            throw new ChatTemplateException(
                $"Unrecognised chat template in {source} ({reason}): \"{head}\". Supported families: ChatML (Qwen) and Mistral/Mixtral [INST]. {Hint}");
        }

        return t;
    }

    /// <summary>Renders the conversation as the Jinja template would.</summary>
    /// <exception cref="ChatTemplateException">The template rejects the conversation (e.g. non-alternating roles).</exception>
    public string Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt)
    {
        ArgumentNullException.ThrowIfNull(messages);
        return Family == ChatTemplateFamily.ChatMl
            ? RenderChatMl(messages, addGenerationPrompt)
            : RenderMistral(messages);
    }

    private string RenderChatMl(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt)
    {
        var sb = new StringBuilder();
        int start = 0;
        if (_chatMl == ChatMlVariant.DefaultSystemHeader)
        {
            if (messages.Count == 0)
            {
                throw new ChatTemplateException($"{Source}: the template reads messages[0]; an empty conversation cannot be rendered.");
            }

            if (messages[0].Role == "system")
            {
                AppendChatMl(sb, "system", messages[0].Content);
                start = 1;
            }
            else
            {
                AppendChatMl(sb, "system", DefaultSystemMessage!);
            }

            for (int i = start; i < messages.Count; i++)
            {
                ChatMessage m = messages[i];
                switch (m.Role)
                {
                    case "user" or "system" or "assistant":
                        AppendChatMl(sb, m.Role, m.Content);
                        break;
                    case "tool":
                        throw new NotSupportedException($"{Source}: tool messages are not supported by the native renderer of this template.");
                    default:
                        break; // the template emits nothing for other roles
                }
            }
        }
        else
        {
            for (int i = 0; i < messages.Count; i++)
            {
                ChatMessage m = messages[i];
                if (i == 0 && _chatMl == ChatMlVariant.DefaultSystemInLoop && m.Role != "system")
                {
                    AppendChatMl(sb, "system", DefaultSystemMessage!);
                }

                AppendChatMl(sb, m.Role, m.Content);
            }
        }

        if (addGenerationPrompt && _hasGenerationPrompt)
        {
            sb.Append(ImStart).Append("assistant\n");
        }

        return sb.ToString();
    }

    private static void AppendChatMl(StringBuilder sb, string role, string content) =>
        sb.Append(ImStart).Append(role).Append('\n').Append(content).Append(ImEnd).Append('\n');

    private string RenderMistral(IReadOnlyList<ChatMessage> messages)
    {
        string? system = null;
        int start = 0;
        if (_mistralHasSystem)
        {
            if (messages.Count == 0)
            {
                throw new ChatTemplateException($"{Source}: the template reads messages[0]; an empty conversation cannot be rendered.");
            }

            if (messages[0].Role == "system")
            {
                system = messages[0].Content;
                start = 1;
            }
        }

        var sb = new StringBuilder();
        sb.Append(BosToken);
        int count = messages.Count - start;
        for (int k = 0; k < count; k++)
        {
            ChatMessage m = messages[start + k];
            if ((m.Role == "user") != (k % 2 == 0))
            {
                throw new ChatTemplateException(_alternationError);
            }

            if (m.Role == "user")
            {
                bool withSystem = system is not null && (_mistralSystemOnLast ? k == count - 1 : k == 0);
                if (withSystem)
                {
                    sb.Append(_systemOpen).Append(system).Append(_systemSeparator).Append(m.Content).Append(_systemClose);
                }
                else
                {
                    sb.Append(_userOpen).Append(m.Content).Append(_userClose);
                }
            }
            else if (m.Role == "assistant")
            {
                string eos = _eosLiteral ?? EosToken
                    ?? throw new ChatTemplateException($"{Source}: the template appends eos_token, but no eos_token is set.");
                sb.Append(_assistantPrefix).Append(m.Content).Append(eos);
            }
            else
            {
                throw new ChatTemplateException(_rolesError);
            }
        }

        return sb.ToString();
    }

    // ---- Recognition ----------------------------------------------------------------------------

    private const string Plus = @"\s*\+\s*";
    private const string Content = @"(?:message\[(?:'content'|""content"")\]|message\.content)";
    private const string Role = @"(?:message\[(?:'role'|""role"")\]|message\.role)";
    private const string Open = @"\{\{-?\s*";
    private const string Close = @"\s*-?\}\}";

    private static string Lit(string name) =>
        $@"(?:'(?<{name}>(?:[^'\\]|\\.)*)'|""(?<{name}>(?:[^""\\]|\\.)*)"")";

    private static readonly Regex AnyLiteral = new(Lit("v"), RegexOptions.CultureInvariant);

    private static readonly Regex ChatMlMessage = new(
        Lit("open") + Plus + Role + Plus + Lit("nl") + Plus + Content + Plus + Lit("end1") + $"(?:{Plus}{Lit("end2")})?",
        RegexOptions.CultureInvariant);

    private static readonly Regex MistralUser = new(
        Open + Lit("uo") + Plus + Content + Plus + Lit("uc") + Close, RegexOptions.CultureInvariant);

    private static readonly Regex MistralSystem = new(
        Open + Lit("so") + Plus + "system_message" + Plus + Lit("sep") + Plus + Content + Plus + Lit("sc") + Close,
        RegexOptions.CultureInvariant);

    private static readonly Regex MistralAssistant = new(
        Open + $"(?:{Lit("ap")}{Plus})?" + Content + Plus + $"(?:(?<eosvar>eos_token)|{Lit("eos")})" + Close,
        RegexOptions.CultureInvariant);

    private static readonly Regex BosExpression = new(Open + "bos_token" + Close, RegexOptions.CultureInvariant);

    private static readonly Regex RaiseException = new(
        @"raise_exception\(\s*" + Lit("msg") + @"\s*\)", RegexOptions.CultureInvariant);

    private string? Recognise()
    {
        string t = Template;
        string? ws = CheckWhitespace(t);
        if (t.Contains(ImStart, StringComparison.Ordinal) && t.Contains(ImEnd, StringComparison.Ordinal))
        {
            Family = ChatTemplateFamily.ChatMl;
            return ws ?? RecogniseChatMl(t);
        }

        if (t.Contains("[INST]", StringComparison.Ordinal) && t.Contains("[/INST]", StringComparison.Ordinal))
        {
            Family = ChatTemplateFamily.MistralInst;
            return ws ?? RecogniseMistral(t);
        }

        return "no known family fingerprint";
    }

    private string? RecogniseChatMl(string t)
    {
        foreach (string marker in new[] { "enable_thinking", "reasoning_content", "<think>", "image", "video", "generation %}" })
        {
            if (t.Contains(marker, StringComparison.Ordinal))
            {
                return $"ChatML variant using '{marker}' is not supported";
            }
        }

        Match m = ChatMlMessage.Match(t);
        if (!m.Success
            || Unescape(m.Groups["open"].Value) != ImStart
            || Unescape(m.Groups["nl"].Value) != "\n"
            || Unescape(m.Groups["end1"].Value) + Unescape(m.Groups["end2"].Value) != ImEnd + "\n")
        {
            return "ChatML per-message expression not found";
        }

        const string sysHead = ImStart + "system\n";
        const string sysTail = ImEnd + "\n";
        foreach (Match lit in AnyLiteral.Matches(t))
        {
            string v = Unescape(lit.Groups["v"].Value);
            if (v.Length > sysHead.Length + sysTail.Length
                && v.StartsWith(sysHead, StringComparison.Ordinal)
                && v.EndsWith(sysTail, StringComparison.Ordinal))
            {
                DefaultSystemMessage = v[sysHead.Length..^sysTail.Length];
                break;
            }
        }

        _hasGenerationPrompt = t.Contains("add_generation_prompt", StringComparison.Ordinal)
            && AnyLiteral.Matches(t).Any(l => Unescape(l.Groups["v"].Value) == ImStart + "assistant\n");

        bool tools = t.Contains("tool_call", StringComparison.Ordinal) || t.Contains("tools", StringComparison.Ordinal);
        if (tools)
        {
            if (DefaultSystemMessage is null)
            {
                return "ChatML template with tools but no default system message";
            }

            _chatMl = ChatMlVariant.DefaultSystemHeader;
            return null;
        }

        if (t.Contains("loop.last", StringComparison.Ordinal))
        {
            return "ChatML variant using 'loop.last' is not supported";
        }

        if (DefaultSystemMessage is not null)
        {
            if (!Regex.IsMatch(t, @"loop\.first\s+and\s+messages\[0\]\[(?:'role'|""role"")\]\s*!=\s*(?:'system'|""system"")"))
            {
                return "ChatML default system message under an unknown condition";
            }

            _chatMl = ChatMlVariant.DefaultSystemInLoop;
            return null;
        }

        if (t.Contains("system", StringComparison.Ordinal) && !t.Contains("'system'", StringComparison.Ordinal))
        {
            return "ChatML template with unknown system handling";
        }

        _chatMl = ChatMlVariant.Plain;
        return null;
    }

    private string? RecogniseMistral(string t)
    {
        foreach (string marker in new[] { "tools", "tool_calls", "[AVAILABLE_TOOLS]", "[SYSTEM_PROMPT]", "namespace" })
        {
            if (t.Contains(marker, StringComparison.Ordinal))
            {
                return $"Mistral variant using '{marker}' is not supported";
            }
        }

        if (!BosExpression.IsMatch(t))
        {
            return "Mistral template without a bos_token expression";
        }

        Match user = MistralUser.Match(t);
        if (!user.Success)
        {
            return "Mistral user-turn expression not found";
        }

        _userOpen = Unescape(user.Groups["uo"].Value);
        _userClose = Unescape(user.Groups["uc"].Value);
        if (!_userOpen.Contains("[INST]", StringComparison.Ordinal) || !_userClose.Contains("[/INST]", StringComparison.Ordinal))
        {
            return "Mistral user-turn expression not recognised";
        }

        Match? assistant = MistralAssistant.Matches(t).FirstOrDefault(a =>
            a.Groups["eosvar"].Success || !Unescape(a.Groups["eos"].Value).Contains("INST", StringComparison.Ordinal));
        if (assistant is null)
        {
            return "Mistral assistant-turn expression not found";
        }

        _assistantPrefix = Unescape(assistant.Groups["ap"].Value);
        _eosLiteral = assistant.Groups["eosvar"].Success ? null : Unescape(assistant.Groups["eos"].Value);

        var raises = RaiseException.Matches(t).Select(r => Unescape(r.Groups["msg"].Value)).ToList();
        string? alternation = raises.FirstOrDefault(r => r.Contains("alternate", StringComparison.Ordinal));
        string? roles = raises.FirstOrDefault(r => !r.Contains("alternate", StringComparison.Ordinal));
        if (alternation is null || roles is null)
        {
            return "Mistral template without the role checks";
        }

        _alternationError = alternation;
        _rolesError = roles;

        _mistralHasSystem = t.Contains("system_message", StringComparison.Ordinal);
        if (_mistralHasSystem)
        {
            Match sys = MistralSystem.Match(t);
            if (!sys.Success)
            {
                return "Mistral system-message expression not found";
            }

            _systemOpen = Unescape(sys.Groups["so"].Value);
            _systemSeparator = Unescape(sys.Groups["sep"].Value);
            _systemClose = Unescape(sys.Groups["sc"].Value);
            if (Regex.IsMatch(t, @"loop\.first\s+and\s+system_message\s+is\s+defined"))
            {
                _mistralSystemOnLast = false;
            }
            else if (Regex.IsMatch(t, @"loop\.last\s+and\s+system_message\s+is\s+defined"))
            {
                _mistralSystemOnLast = true;
            }
            else
            {
                return "Mistral system message under an unknown condition";
            }
        }
        else if (t.Contains("system", StringComparison.Ordinal) && !t.Contains("raise_exception", StringComparison.Ordinal))
        {
            return "Mistral template with unknown system handling";
        }

        return null;
    }

    /// <summary>
    /// Returns a reason when text outside the Jinja tags would be emitted (the native renderers assume
    /// the template's output comes from its expressions only). Whitespace is fine when a '-' modifier
    /// strips it, or when it is the single newline trim_blocks removes after a block tag, or the single
    /// trailing newline Jinja drops at the end of the template.
    /// </summary>
    private static string? CheckWhitespace(string t)
    {
        int pos = 0;
        bool prevStripsRight = true; // start of template: nothing before
        bool prevIsBlock = false;
        while (pos <= t.Length)
        {
            int next = NextTagStart(t, pos);
            string text = next < 0 ? t[pos..] : t[pos..next];
            bool nextStripsLeft = next >= 0 && next + 2 < t.Length && t[next + 2] == '-';
            if (text.Length > 0)
            {
                bool allWhite = string.IsNullOrWhiteSpace(text);
                bool ok = allWhite && (prevStripsRight || nextStripsLeft
                    || (prevIsBlock && text == "\n")
                    || (next < 0 && text == "\n")
                    || (prevIsBlock && next < 0 && text == "\n"));
                if (!ok)
                {
                    return "text outside the template tags";
                }
            }

            if (next < 0)
            {
                break;
            }

            char kind = t[next + 1];
            string closer = kind switch { '{' => "}}", '%' => "%}", _ => "#}" };
            int end = t.IndexOf(closer, next + 2, StringComparison.Ordinal);
            if (end < 0)
            {
                return "unterminated tag";
            }

            prevStripsRight = end > 0 && t[end - 1] == '-';
            prevIsBlock = kind is '%' or '#';
            pos = end + 2;
        }

        return null;
    }

    private static int NextTagStart(string t, int from)
    {
        for (int i = from; i + 1 < t.Length; i++)
        {
            if (t[i] == '{' && t[i + 1] is '{' or '%' or '#')
            {
                return i;
            }
        }

        return -1;
    }

    /// <summary>Jinja string-literal escapes (Python style).</summary>
    private static string Unescape(string s)
    {
        if (!s.Contains('\\', StringComparison.Ordinal))
        {
            return s;
        }

        var sb = new StringBuilder(s.Length);
        for (int i = 0; i < s.Length; i++)
        {
            char c = s[i];
            if (c != '\\' || i + 1 >= s.Length)
            {
                sb.Append(c);
                continue;
            }

            char e = s[++i];
            switch (e)
            {
                case 'n': sb.Append('\n'); break;
                case 't': sb.Append('\t'); break;
                case 'r': sb.Append('\r'); break;
                case '\\': sb.Append('\\'); break;
                case '\'': sb.Append('\''); break;
                case '"': sb.Append('"'); break;
                case 'u' when i + 4 < s.Length:
                    sb.Append((char)Convert.ToInt32(s.Substring(i + 1, 4), 16));
                    i += 4;
                    break;
                default: sb.Append('\\').Append(e); break;
            }
        }

        return sb.ToString();
    }

    private static string? ReadTemplateSetting(JsonElement ct, string configPath)
    {
        switch (ct.ValueKind)
        {
            case JsonValueKind.Null:
                return null;
            case JsonValueKind.String:
                return ct.GetString();
            case JsonValueKind.Array:
                foreach (JsonElement item in ct.EnumerateArray())
                {
                    if (item.ValueKind == JsonValueKind.Object
                        && item.TryGetProperty("name", out JsonElement n) && n.ValueKind == JsonValueKind.String && n.GetString() == "default"
                        && item.TryGetProperty("template", out JsonElement tpl) && tpl.ValueKind == JsonValueKind.String)
                    {
                        return tpl.GetString();
                    }
                }

                throw new ChatTemplateException($"{configPath}: chat_template is a list without a \"default\" entry. {Hint}");
            default:
                throw new InvalidDataException($"{configPath}: chat_template must be a string or a list of {{name, template}}.");
        }
    }
}
