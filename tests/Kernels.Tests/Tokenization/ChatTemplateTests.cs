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
        Assert.Equal(ChatTemplateFamily.ChatMl, t.Family);
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
        Assert.Equal("You are a helpful assistant.", t.DefaultSystemMessage);
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
        Assert.Null(t.DefaultSystemMessage);
        Assert.Equal(
            "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n",
            t.Render([U1, A1], addGenerationPrompt: false));
    }

    [Fact]
    public void Mistral_template_alternates_inst_blocks_and_folds_the_system_message_into_the_first_user_turn()
    {
        ChatTemplate t = Mistral;
        Assert.Equal(ChatTemplateFamily.MistralInst, t.Family);
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
        Assert.Equal(ChatTemplateFamily.MistralInst, t.Family);
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
            Assert.Equal(ChatTemplateFamily.MistralInst, t.Family);
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
            Assert.Equal(ChatTemplateFamily.ChatMl, t.Family);
            Assert.Equal("You are a helpful assistant.", t.DefaultSystemMessage);
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
    public void Unrecognised_template_error_names_it_and_suggests_an_override()
    {
        string dir = TempDir.Create();
        try
        {
            const string Llama3 = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{{ content }}{% endfor %}";
            WriteConfig(dir, new { chat_template = Llama3 });
            var ex = Assert.Throws<ChatTemplateException>(() => ChatTemplate.Load(dir));
            Assert.Contains(Llama3[..80], ex.Message);
            Assert.DoesNotContain(Llama3[..100], ex.Message);
            Assert.Contains(Path.Combine(dir, "tokenizer_config.json"), ex.Message);
            Assert.Contains("override", ex.Message);

            // ... and an explicit override wins over the unrecognised template.
            ChatTemplate t = ChatTemplate.Load(dir, "chatml");
            Assert.Equal(ChatTemplateFamily.ChatMl, t.Family);
        }
        finally
        {
            TempDir.Delete(dir);
        }
    }

    [Fact]
    public void Template_variants_with_unsupported_features_are_not_silently_misrendered()
    {
        // Qwen1.5 variant: omits the last <|im_end|> without a generation prompt.
        const string Qwen15 = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content']}}{% if (loop.last and add_generation_prompt) or not loop.last %}{{ '<|im_end|>' + '\n'}}{% endif %}{% endfor %}{% if add_generation_prompt and messages[-1]['role'] != 'assistant' %}{{ '<|im_start|>assistant\n' }}{% endif %}";
        Assert.Throws<ChatTemplateException>(() => ChatTemplate.FromJinja(Qwen15, null, null));

        // Literal text outside the tags would be emitted by Jinja.
        const string WithText = "Conversation:\n{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}";
        var ex = Assert.Throws<ChatTemplateException>(() => ChatTemplate.FromJinja(WithText, null, null, "my.jinja"));
        Assert.Contains("my.jinja", ex.Message);
    }

    [Fact]
    public void Override_wins_over_the_config_template()
    {
        string dir = TempDir.Create();
        try
        {
            WriteConfig(dir, new { bos_token = "<s>", eos_token = "</s>", chat_template = ChatTemplates.ChatMlJinja });
            ChatTemplate t = ChatTemplate.Load(dir, "mistral");
            Assert.Equal(ChatTemplateFamily.MistralInst, t.Family);
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

            File.WriteAllText(path, "{{ messages | tojson }}");
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
