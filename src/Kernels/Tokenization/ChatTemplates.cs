namespace MoeServer.Kernels.Tokenization;

/// <summary>
/// Real chat templates (Jinja source exactly as found in the models' tokenizer_config.json), for writing into
/// generated checkpoints and as the server's built-in overrides (<see cref="ChatTemplate.BuiltInOverrides"/>).
/// Each is also a golden template (tests/Kernels.Tests/Jinja/golden/templates/builtin_*.jinja).
/// </summary>
public static class ChatTemplates
{
    /// <summary>
    /// Qwen2-Instruct ChatML template: <c>&lt;|im_start|&gt;{role}\n{content}&lt;|im_end|&gt;\n</c> per message,
    /// a default system message ("You are a helpful assistant.") when the first message is not a system
    /// one, and <c>&lt;|im_start|&gt;assistant\n</c> for add_generation_prompt.
    /// </summary>
    public const string ChatMlJinja =
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    /// <summary>Plain ChatML (no default system message), as in the transformers chat-templating docs.</summary>
    public const string ChatMlPlainJinja =
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    /// <summary>
    /// Mixtral-8x7B-Instruct-v0.1 / Mistral-7B-Instruct-v0.2 template: bos, then
    /// <c> [INST] {user} [/INST]</c> and <c> {assistant}&lt;/s&gt;</c> alternating; an initial system message is
    /// folded into the first user turn (<c>{system}\n\n{user}</c>); other orders raise.
    /// </summary>
    public const string MistralInstJinja = """
        {%- if messages[0]['role'] == 'system' %}
            {%- set system_message = messages[0]['content'] %}
            {%- set loop_messages = messages[1:] %}
        {%- else %}
            {%- set loop_messages = messages %}
        {%- endif %}

        {{- bos_token }}
        {%- for message in loop_messages %}
            {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
                {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}
            {%- endif %}
            {%- if message['role'] == 'user' %}
                {%- if loop.first and system_message is defined %}
                    {{- ' [INST] ' + system_message + '\n\n' + message['content'] + ' [/INST]' }}
                {%- else %}
                    {{- ' [INST] ' + message['content'] + ' [/INST]' }}
                {%- endif %}
            {%- elif message['role'] == 'assistant' %}
                {{- ' ' + message['content'] + eos_token}}
            {%- else %}
                {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}
            {%- endif %}
        {%- endfor %}

        """;

    /// <summary>
    /// The original (v0) Mistral/Mixtral instruct template: <c>{bos}[INST] {user} [/INST]{assistant}&lt;/s&gt;</c>,
    /// no system message support.
    /// </summary>
    public const string MistralInstV0Jinja =
        """{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}""";
}
