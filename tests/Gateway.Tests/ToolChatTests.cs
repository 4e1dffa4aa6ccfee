using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.SignalR.Client;
using MoeServer.Gateway.Hubs;
using MoeServer.Gateway.OpenAi;
using MoeServer.Gateway.Tests.Support;
using MoeServer.Kernels.Tokenization;

namespace MoeServer.Gateway.Tests;

/// <summary>
/// Tools, assistant tool calls and tool results through the OpenAI surface to a tool-aware chat template (a Qwen3-style
/// template given as the server's chat-template override): the prompt must be exactly what the template renders.
/// </summary>
public sealed class ToolChatTests : IAsyncLifetime
{
    private const string Template = """
        {%- if tools %}
            {{- '<|im_start|>system\n# Tools\n<tools>' }}
            {%- for tool in tools %}
                {{- '\n' + tool | tojson }}
            {%- endfor %}
            {{- '\n</tools><|im_end|>\n' }}
        {%- endif %}
        {%- for message in messages %}
            {%- if message.role == 'tool' %}
                {{- '<|im_start|>user\n<tool_response id="' + message.tool_call_id + '" name="' + message.name + '">\n' + message.content + '\n</tool_response><|im_end|>\n' }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\n' + (message.content or '') }}
                {%- for call in message.tool_calls | default([]) %}
                    {{- '\n<tool_call>\n{"name": "' + call.function.name + '", "arguments": ' + call.function.arguments | tojson + '}\n</tool_call>' }}
                {%- endfor %}
                {{- '<|im_end|>\n' }}
            {%- endif %}
        {%- endfor %}
        {%- if add_generation_prompt %}
            {{- '<|im_start|>assistant\n' }}
            {%- if enable_thinking is defined and enable_thinking is false %}
                {{- '<think>\n\n</think>\n\n' }}
            {%- endif %}
        {%- endif %}
        {%- if messages | length > 6 %}
            {{- raise_exception('Too many messages for this template: ' ~ messages | length) }}
        {%- endif %}
        """;

    private const string ToolsJson = """[{"type": "function", "function": {"name": "get_weather", "description": "Weather «now»", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]""";

    private readonly string _dir = Path.Combine(Path.GetTempPath(), "moe-tool-template-" + Guid.NewGuid().ToString("N")[..8]);
    private GatewayServer _server = null!;

    private string TemplatePath => Path.Combine(_dir, "tools.jinja");

    public async Task InitializeAsync()
    {
        Directory.CreateDirectory(_dir);
        await File.WriteAllTextAsync(TemplatePath, Template);
        _server = await GatewayServer.StartAsync(TinyModel.Dir, $"moe.gateway.chat-template = \"{TemplatePath.Replace("\\", "/", StringComparison.Ordinal)}\"");
    }

    public async Task DisposeAsync()
    {
        await _server.DisposeAsync();
        Directory.Delete(_dir, true);
    }

    private static object Conversation(object? content = null) => new object[]
    {
        new { role = "user", content = "Weather in Paris?" },
        new
        {
            role = "assistant",
            content,
            tool_calls = new[] { new { id = "call_1", type = "function", function = new { name = "get_weather", arguments = "{\"city\": \"Paris\"}" } } },
        },
        new { role = "tool", tool_call_id = "call_1", content = "{\"temperature\": 21}" },
    };

    private static List<ChatMessage> ConversationMessages()
    {
        using var args = JsonDocument.Parse("{\"city\": \"Paris\"}");
        return
        [
            new("user", "Weather in Paris?"),
            new("assistant", null) { ToolCalls = [new ChatToolCall("call_1", "get_weather", args.RootElement.Clone())] },
            new("tool", "{\"temperature\": 21}") { ToolCallId = "call_1", Name = "get_weather" }, // the name comes from the call's id
        ];
    }

    private async Task<int[]> TokenizeAsync(object body)
    {
        using var r = await _server.Http.PostAsJsonAsync("/tokenize", body);
        string text = await r.Content.ReadAsStringAsync();
        Assert.True(r.StatusCode == HttpStatusCode.OK, text);
        return JsonDocument.Parse(text).RootElement.GetProperty("tokens").EnumerateArray().Select(e => e.GetInt32()).ToArray();
    }

    private int[] Expected(IReadOnlyList<JsonElement>? tools, Dictionary<string, object?>? kwargs)
    {
        string text = ChatTemplate.Load(TinyModel.Dir, TemplatePath).Render(ConversationMessages(), addGenerationPrompt: true, tools, kwargs);
        Assert.Contains("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>", text, StringComparison.Ordinal);
        Assert.Contains("<tool_response id=\"call_1\" name=\"get_weather\">", text, StringComparison.Ordinal);
        return HfTokenizer.Load(TinyModel.Dir).Encode(text, parseSpecialTokens: true);
    }

    [Fact]
    public async Task Tools_tool_calls_and_tool_results_reach_the_template_as_transformers_passes_them()
    {
        using var tools = JsonDocument.Parse(ToolsJson);
        int[] got = await TokenizeAsync(new { messages = Conversation(), tools = tools.RootElement, chat_template_kwargs = new { enable_thinking = false } });
        int[] want = Expected([.. tools.RootElement.EnumerateArray()], new Dictionary<string, object?> { ["enable_thinking"] = false });
        Assert.Equal(want, got);

        using var d = await _server.Http.PostAsJsonAsync("/detokenize", new { tokens = got });
        string prompt = JsonDocument.Parse(await d.Content.ReadAsStringAsync()).RootElement.GetProperty("prompt").GetString()!;
        Assert.Contains("\"description\": \"Weather «now»\"", prompt, StringComparison.Ordinal);
        Assert.EndsWith("<think>\n\n</think>\n\n", prompt, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Chat_completion_with_tools_generates()
    {
        using var tools = JsonDocument.Parse(ToolsJson);
        using var r = await _server.Http.PostAsJsonAsync("/v1/chat/completions", new { messages = Conversation(""), tools = tools.RootElement, max_tokens = 2, temperature = 0 });
        string body = await r.Content.ReadAsStringAsync();
        Assert.True(r.StatusCode == HttpStatusCode.OK, body);
        var usage = JsonDocument.Parse(body).RootElement.GetProperty("usage");
        // content "" here, none in the reference: the template renders both as '' (content or '').
        Assert.Equal(Expected([.. tools.RootElement.EnumerateArray()], null).Length, usage.GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(2, usage.GetProperty("completion_tokens").GetInt32());
    }

    [Fact]
    public async Task The_hub_passes_tools_and_tool_messages_to_the_template_too()
    {
        using var tools = JsonDocument.Parse(ToolsJson);
        await using var connection = new HubConnectionBuilder().WithUrl(new Uri(_server.BaseAddress, ChatHub.Path)).Build();
        await connection.StartAsync();
        using var args = JsonDocument.Parse("\"{\\\"city\\\": \\\"Paris\\\"}\"");
        var request = new ChatRequest
        {
            Messages =
            [
                new ChatMessageDto { Role = "user", Content = "Weather in Paris?" },
                new ChatMessageDto
                {
                    Role = "assistant",
                    ToolCalls = [new ToolCallDto { Id = "call_1", Type = "function", Function = new ToolCallFunctionDto { Name = "get_weather", Arguments = args.RootElement } }],
                },
                new ChatMessageDto { Role = "tool", ToolCallId = "call_1", Content = "{\"temperature\": 21}" },
            ],
            Tools = tools.RootElement,
            ChatTemplateKwargs = JsonDocument.Parse("{\"enable_thinking\": false}").RootElement,
            MaxTokens = 2,
            Temperature = 0,
        };
        var chunks = new List<HubTokenChunk>();
        await foreach (var c in connection.StreamAsync<HubTokenChunk>("Chat", request)) chunks.Add(c);
        int[] want = Expected([.. tools.RootElement.EnumerateArray()], new Dictionary<string, object?> { ["enable_thinking"] = false });
        Assert.Equal(want.Length, chunks[^1].Usage!.PromptTokens);
    }

    [Fact]
    public async Task Tool_choice_none_leaves_the_tools_out()
    {
        using var tools = JsonDocument.Parse(ToolsJson);
        int[] without = Expected(null, null);
        using var r = await _server.Http.PostAsJsonAsync("/v1/chat/completions", new { messages = Conversation(), tools = tools.RootElement, tool_choice = "none", max_tokens = 1 });
        string body = await r.Content.ReadAsStringAsync();
        Assert.True(r.StatusCode == HttpStatusCode.OK, body);
        Assert.Equal(without.Length, JsonDocument.Parse(body).RootElement.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
    }

    [Fact]
    public async Task The_templates_raise_exception_is_a_400_with_its_message()
    {
        var many = Enumerable.Range(0, 7).Select(i => new { role = i % 2 == 0 ? "user" : "assistant", content = "m" + i }).ToArray();
        using var r = await _server.Http.PostAsync("/v1/chat/completions",
            new StringContent(JsonSerializer.Serialize(new { messages = many, max_tokens = 1 }), Encoding.UTF8, "application/json"));
        string body = await r.Content.ReadAsStringAsync();
        Assert.True(r.StatusCode == HttpStatusCode.BadRequest, body);
        var error = JsonDocument.Parse(body).RootElement.GetProperty("error");
        Assert.Equal("invalid_request_error", error.GetProperty("type").GetString());
        Assert.Equal("messages", error.GetProperty("param").GetString());
        Assert.Contains("Too many messages for this template: 7", error.GetProperty("message").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_template_outside_the_subset_makes_chat_requests_400s_naming_the_construct()
    {
        string bad = Path.Combine(_dir, "bad.jinja");
        await File.WriteAllTextAsync(bad, "{{ bos_token }}\n{% include 'other.jinja' %}");
        await using var server = await GatewayServer.StartAsync(TinyModel.Dir, $"moe.gateway.chat-template = \"{bad.Replace("\\", "/", StringComparison.Ordinal)}\"");
        using var r = await server.Http.PostAsync("/v1/chat/completions",
            new StringContent("""{"messages":[{"role":"user","content":"hi"}],"max_tokens":1}""", Encoding.UTF8, "application/json"));
        string body = await r.Content.ReadAsStringAsync();
        Assert.True(r.StatusCode == HttpStatusCode.BadRequest, body);
        string message = JsonDocument.Parse(body).RootElement.GetProperty("error").GetProperty("message").GetString()!;
        Assert.Contains("include", message, StringComparison.Ordinal);
        Assert.Contains("line 2", message, StringComparison.Ordinal);
        Assert.Contains("bad.jinja", message, StringComparison.Ordinal);

        using var plain = await server.Http.PostAsync("/v1/completions",
            new StringContent("""{"prompt":"hi","max_tokens":1}""", Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.OK, plain.StatusCode); // the model still serves plain completions
    }
}
