using System.Text.Json;
using MoeServer.Kernels.Tokenization;

namespace MoeServer.Kernels.Tests.Tokenization;

public class ChatTemplateTests
{
    private static readonly ChatMessage Sys = new("system", "You are terse.");
    private static readonly ChatMessage U1 = new("user", "Hi there");
    private static readonly ChatMessage A1 = new("assistant", "Hello!");
    private static readonly ChatMessage U2 = new("user", "What is 2+2?");

    private static ChatTemplate Qwen => ChatTemplate.FromJinja(ChatTemplates.ChatMlJinja, null, "<|im_end|>");

    private static ChatTemplate Mistral => ChatTemplate.FromJinja(ChatTemplates.MistralInstJinja, "<s>", "</s>");

    // Expected strings below are what jinja2 (transformers' settings) renders for these templates.
    [Fact]
    public void ChatMl_renders_each_message_and_the_generation_prompt()
    {
        ChatTemplate t = Qwen;
        Assert.Equal(
            "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
            t.Render([Sys, U1, A1, U2], addGenerationPrompt: true));
        Assert.Equal(
            "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n",
            t.Render([Sys, U1], addGenerationPrompt: false));
    }

    [Fact]
    public void Qwen_template_adds_its_default_system_message_when_the_first_message_is_not_system()
    {
        ChatTemplate t = Qwen;
        Assert.Equal(
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
            t.Render([U1], addGenerationPrompt: true));
        Assert.Equal(
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>system\nYou are terse.<|im_end|>\n",
            t.Render([U1, Sys], addGenerationPrompt: false));
        Assert.Equal("<|im_start|>assistant\n", t.Render([], addGenerationPrompt: true));
    }

    [Fact]
    public void Plain_ChatMl_has_no_default_system_message()
    {
        ChatTemplate t = ChatTemplate.FromJinja(ChatTemplates.ChatMlPlainJinja, null, null);
        Assert.Equal(
            "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n",
            t.Render([U1, A1], addGenerationPrompt: false));
    }

    [Fact]
    public void Mistral_template_alternates_inst_blocks_and_folds_the_system_message_into_the_first_user_turn()
    {
        ChatTemplate t = Mistral;
        Assert.Equal("<s> [INST] Hi there [/INST]", t.Render([U1], addGenerationPrompt: true));
        Assert.Equal("<s> [INST] Hi there [/INST] Hello!</s>", t.Render([U1, A1], addGenerationPrompt: false));
        Assert.Equal(
            "<s> [INST] You are terse.\n\nHi there [/INST] Hello!</s> [INST] What is 2+2? [/INST]",
            t.Render([Sys, U1, A1, U2], addGenerationPrompt: true));
        Assert.Equal("<s>", t.Render([Sys], addGenerationPrompt: false));
    }

    [Fact]
    public void Mistral_template_raises_on_non_alternating_roles_like_the_real_template()
    {
        ChatTemplate t = Mistral;
        var ex = Assert.Throws<ChatTemplateException>(() => t.Render([U1, U2], addGenerationPrompt: false));
        Assert.Equal("After the optional system message, conversation roles must alternate user/assistant/user/assistant/...", ex.Message);
        Assert.Throws<ChatTemplateException>(() => t.Render([A1], addGenerationPrompt: false));
        var roles = Assert.Throws<ChatTemplateException>(() => t.Render([U1, Sys], addGenerationPrompt: false));
        Assert.Equal("Only user and assistant roles are supported, with the exception of an initial optional system message!", roles.Message);
        Assert.Throws<ChatTemplateException>(() => t.Render([], addGenerationPrompt: false));
    }

    [Fact]
    public void Original_mistral_v0_template_has_no_spaces_around_turns_and_rejects_system()
    {
        ChatTemplate t = ChatTemplate.FromJinja(ChatTemplates.MistralInstV0Jinja, "<s>", "</s>");
        Assert.Equal("<s>[INST] Hi there [/INST]Hello!</s>[INST] What is 2+2? [/INST]", t.Render([U1, A1, U2], addGenerationPrompt: true));
        var ex = Assert.Throws<ChatTemplateException>(() => t.Render([Sys, U1], addGenerationPrompt: false));
        Assert.Equal("Conversation roles must alternate user/assistant/user/assistant/...", ex.Message);
    }

    [Fact]
    public void Load_reads_the_template_and_bos_eos_from_tokenizer_config()
    {
        string dir = TempDir.Create();
        try
        {
            WriteConfig(dir, new { bos_token = "<s>", eos_token = new { content = "</s>" }, chat_template = ChatTemplates.MistralInstJinja });
            ChatTemplate t = ChatTemplate.Load(dir);
                Assert.Equal("<s> [INST] Hi there [/INST] Hello!</s>", t.Render([U1, A1], false));
            Assert.Equal(Path.Combine(dir, "tokenizer_config.json"), t.Source);
        }
        finally
        {
            TempDir.Delete(dir);
        }
    }

    [Fact]
    public void Load_picks_the_default_entry_of_a_template_list()
    {
        string dir = TempDir.Create();
        try
        {
            WriteConfig(dir, new
            {
                eos_token = "<|im_end|>",
                chat_template = new object[]
                {
                    new { name = "tool_use", template = "{{ 'something else' }}" },
                    new { name = "default", template = ChatTemplates.ChatMlJinja },
                },
            });
            ChatTemplate t = ChatTemplate.Load(dir);
            Assert.Equal("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n", t.Render([U1], false));

            // As in transformers, a request with tools renders the "tool_use" entry instead.
            Assert.Equal("{{ 'something else' }}", t.ToolUseTemplate);
            using var tool = JsonDocument.Parse("""{"type": "function", "function": {"name": "f"}}""");
            Assert.Equal("something else", t.Render([U1], false, [tool.RootElement]));
        }
        finally
        {
            TempDir.Delete(dir);
        }
    }

    [Fact]
    public void Load_falls_back_to_chat_template_jinja()
    {
        string dir = TempDir.Create();
        try
        {
            File.WriteAllText(Path.Combine(dir, "chat_template.jinja"), ChatTemplates.ChatMlPlainJinja);
            ChatTemplate t = ChatTemplate.Load(dir);
            Assert.Equal("<|im_start|>user\nHi there<|im_end|>\n", t.Render([U1], false));
        }
        finally
        {
            TempDir.Delete(dir);
        }
    }

    [Fact]
    public void Any_template_renders_no_fingerprint_needed()
    {
        string dir = TempDir.Create();
        try
        {
            // Llama-3 style: not one of the built-ins; jinja2 renders it as below.
            const string Llama3 = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";
            WriteConfig(dir, new { bos_token = "<|begin_of_text|>", chat_template = Llama3 });
            ChatTemplate t = ChatTemplate.Load(dir);
            Assert.Equal(
                "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
                t.Render([Sys, U1], addGenerationPrompt: true));

            // ... and an explicit override still wins over the config's template.
            Assert.Equal("override 'chatml'", ChatTemplate.Load(dir, "chatml").Source);
        }
        finally
        {
            TempDir.Delete(dir);
        }
    }

    [Fact]
    public void Template_variants_render_as_jinja2_does()
    {
        // Qwen1.5 variant: omits the last <|im_end|> without a generation prompt.
        const string Qwen15 = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content']}}{% if (loop.last and add_generation_prompt) or not loop.last %}{{ '<|im_end|>' + '\n'}}{% endif %}{% endfor %}{% if add_generation_prompt and messages[-1]['role'] != 'assistant' %}{{ '<|im_start|>assistant\n' }}{% endif %}";
        Assert.Equal(
            "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\nHello!",
            ChatTemplate.FromJinja(Qwen15, null, null).Render([U1, A1], addGenerationPrompt: false));

        // Literal text outside the tags is emitted.
        const string WithText = "Conversation:\n{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}";
        Assert.Equal("Conversation:\n<|im_start|>user\nHi there<|im_end|>\n", ChatTemplate.FromJinja(WithText, null, null, "my.jinja").Render([U1], false));
    }

    [Fact]
    public void Unsupported_construct_error_names_the_construct_the_line_and_the_source()
    {
        var ex = Assert.Throws<ChatTemplateException>(() => ChatTemplate.FromJinja("{{ bos_token }}\n{% include 'header.jinja' %}", "<s>", "</s>", "GGUF tokenizer.chat_template"));
        Assert.Contains("include", ex.Message);
        Assert.Contains("line 2", ex.Message);
        Assert.Contains("GGUF tokenizer.chat_template", ex.Message);

        var filter = Assert.Throws<ChatTemplateException>(() => ChatTemplate.FromJinja("{% for m in messages %}\n{{ m.content | wordwrap(20) }}{% endfor %}", null, null));
        Assert.Contains("'wordwrap'", filter.Message);
        Assert.Contains("line 2", filter.Message);
    }

    [Fact]
    public void Runtime_errors_become_ChatTemplateException_naming_the_source_and_line()
    {
        ChatTemplate t = ChatTemplate.FromJinja("{% for m in messages %}\n{{ m.content + 1 }}{% endfor %}", null, null, "my.jinja");
        var ex = Assert.Throws<ChatTemplateException>(() => t.Render([U1], false));
        Assert.Contains("my.jinja", ex.Message);
        Assert.Contains("line 2", ex.Message);
        Assert.Contains("can only concatenate str", ex.Message);
    }

    [Fact]
    public void Tools_tool_calls_and_extra_variables_reach_the_template()
    {
        const string Source = "{% if tools %}{{ tools | map(attribute='function.name') | join(',') }}|{% endif %}{% for m in messages %}{{ m.role }}:{{ m.content }}"
            + "{% for c in m.tool_calls | default([]) %}[{{ c.id }} {{ c.function.name }} {{ c.function.arguments | tojson }}]{% endfor %}"
            + "{% if m.tool_call_id %}({{ m.tool_call_id }} {{ m.name }}){% endif %}{% if m.reasoning_content %}<{{ m.reasoning_content }}>{% endif %};{% endfor %}{{ enable_thinking }}";
        ChatTemplate t = ChatTemplate.FromJinja(Source, null, null);
        using var tool = JsonDocument.Parse("""{"type": "function", "function": {"name": "get_weather", "parameters": {}}}""");
        using var args = JsonDocument.Parse("""{"city": "Zürich", "days": 2}""");
        ChatMessage[] messages =
        [
            U1,
            new("assistant", null) { ReasoningContent = "think", ToolCalls = [new ChatToolCall("c1", "get_weather", args.RootElement)] },
            new("tool", "sunny") { ToolCallId = "c1", Name = "get_weather" },
            new("user", null) { Parts = [new ChatContentPart("text", "part")] },
        ];
        string text = t.Render(messages, false, [tool.RootElement], new Dictionary<string, object?> { ["enable_thinking"] = false });
        Assert.Equal(
            "get_weather|user:Hi there;assistant:None[c1 get_weather {\"city\": \"Zürich\", \"days\": 2}]<think>;tool:sunny(c1 get_weather);user:[{'type': 'text', 'text': 'part'}];False",
            text);
        Assert.Throws<ArgumentException>(() => t.Render([U1], false, null, new Dictionary<string, object?> { ["messages"] = "x" }));
    }

    [Fact]
    public void Override_wins_over_the_config_template()
    {
        string dir = TempDir.Create();
        try
        {
            WriteConfig(dir, new { bos_token = "<s>", eos_token = "</s>", chat_template = ChatTemplates.ChatMlJinja });
            ChatTemplate t = ChatTemplate.Load(dir, "mistral");
                Assert.Equal("<s> [INST] Hi there [/INST]", t.Render([U1], true));
            Assert.Equal("override 'mistral'", t.Source);
        }
        finally
        {
            TempDir.Delete(dir);
        }
    }

    [Fact]
    public void Override_can_be_a_path_to_a_jinja_file()
    {
        string dir = TempDir.Create();
        try
        {
            string path = Path.Combine(dir, "custom.jinja");
            File.WriteAllText(path, ChatTemplates.MistralInstV0Jinja);
            ChatTemplate t = ChatTemplate.FromOverride(path);
            Assert.Equal("<s>[INST] Hi there [/INST]", t.Render([U1], true));

            File.WriteAllText(path, "{% for m in messages %}never closed");
            var ex = Assert.Throws<ChatTemplateException>(() => ChatTemplate.FromOverride(path));
            Assert.Contains(path, ex.Message);
        }
        finally
        {
            TempDir.Delete(dir);
        }
    }

    [Fact]
    public void Unknown_override_name_is_rejected()
    {
        var ex = Assert.Throws<ChatTemplateException>(() => ChatTemplate.FromOverride("llama-9000"));
        Assert.Contains("llama-9000", ex.Message);
        Assert.Contains("chatml", ex.Message);
    }

    [Fact]
    public void Missing_template_error_names_the_config_file()
    {
        string dir = TempDir.Create();
        try
        {
            WriteConfig(dir, new { bos_token = "<s>" });
            var ex = Assert.Throws<ChatTemplateException>(() => ChatTemplate.Load(dir));
            Assert.Contains(Path.Combine(dir, "tokenizer_config.json"), ex.Message);
            Assert.Contains("override", ex.Message);
        }
        finally
        {
            TempDir.Delete(dir);
        }
    }

    [Fact]
    public void Generated_checkpoint_files_round_trip_through_tokenizer_and_template()
    {
        BpeModel model = BpeTrainer.Train(BuiltInCorpus.Text, new BpeTrainerOptions
        {
            VocabSize = 700,
            SpecialTokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        });
        string dir = TempDir.Create();
        try
        {
            TokenizerJsonWriter.WriteToDirectory(model, dir);
            TokenizerJsonWriter.WriteTokenizerConfig(dir, model, null, "<|im_end|>", ChatTemplates.ChatMlJinja, padToken: "<|endoftext|>");
            HfTokenizer tok = HfTokenizer.Load(dir);
            ChatTemplate tpl = ChatTemplate.Load(dir);
            string prompt = tpl.Render([new ChatMessage("user", "Grüß dich! 🙂 中文?")], addGenerationPrompt: true);
            int[] ids = tok.Encode(prompt);
            Assert.Equal(prompt, tok.Decode(ids));
            Assert.Equal(3, ids.Count(i => i == tok.TokenToId("<|im_start|>")));
            Assert.Equal(2, ids.Count(i => i == tok.EosId));
            Assert.Null(tok.BosId);
        }
        finally
        {
            TempDir.Delete(dir);
        }
    }

    private static void WriteConfig(string dir, object config) =>
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), JsonSerializer.Serialize(config));
}
