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

    /// <summary>Renders chat messages with the model's template and tokenizes them.</summary>
    public int[] EncodeChat(IReadOnlyList<ChatMessageDto>? messages, Func<string, string> fieldName, bool addGenerationPrompt = true)
    {
        string field = fieldName("messages");
        if (messages is null || messages.Count == 0) throw OpenAiException.Invalid(field, $"{field} must be a non-empty list of messages.");
        var list = new List<ChatMessage>(messages.Count);
        for (int i = 0; i < messages.Count; i++)
        {
            var m = messages[i];
            if (m is null) throw OpenAiException.Invalid($"{field}[{i}]", $"{field}[{i}] is null.");
            if (m.Role is not ("system" or "user" or "assistant" or "developer"))
                throw OpenAiException.Invalid($"{field}[{i}].role", $"{field}[{i}].role must be one of system, developer, user, assistant; got {(m.Role is null ? "nothing" : $"\"{m.Role}\"")}.");
            if (m.Content is null) throw OpenAiException.Invalid($"{field}[{i}].content", $"{field}[{i}].content is missing.");
            list.Add(new ChatMessage(m.Role == "developer" ? "system" : m.Role, m.Content));
        }
        if (ChatTemplate is null) throw OpenAiException.Invalid(field, $"this model has no chat template ({ChatTemplateProblem}); use /v1/completions.");
        string text;
        try
        {
            text = ChatTemplate.Render(list, addGenerationPrompt);
        }
        catch (ChatTemplateException e)
        {
            throw OpenAiException.Invalid(field, $"the chat template refused the messages: {e.Message}");
        }
        return Tokenizer.Encode(text, parseSpecialTokens: true);
    }
}
