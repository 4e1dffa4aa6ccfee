using MoeServer.Actors.Generation;
using MoeServer.Kernels.Sampling;
using MoeServer.Kernels.Tokenization;

namespace MoeServer.Gateway.Tests.Support;

/// <summary>What the engine itself generates for a prompt (in-process, no HTTP): the reference the API must match.</summary>
public static class Reference
{
    public static int[] Encode(string prompt) => HfTokenizer.Load(TinyModel.Dir).Encode(prompt);

    public static int[] EncodeChat(params (string Role, string Content)[] messages)
    {
        var template = ChatTemplate.Load(TinyModel.Dir);
        string text = template.Render(messages.Select(m => new ChatMessage(m.Role, m.Content)).ToList(), addGenerationPrompt: true);
        return HfTokenizer.Load(TinyModel.Dir).Encode(text, parseSpecialTokens: true);
    }

    /// <summary>Greedy text and token count of one request run alone on the engine.</summary>
    public static async Task<(string Text, int Tokens, string Finish)> GreedyAsync(MoeEngine engine, int[] prompt, int maxTokens)
    {
        var stream = await engine.SubmitAsync(new GenerationRequest("ref-" + Guid.NewGuid().ToString("N")[..8], prompt,
            SamplingParams.Greedy with { MaxTokens = maxTokens }));
        var (text, final, ids) = await stream.CollectAsync();
        return (text, ids.Count, final.FinishReason!.Value.ToString().ToLowerInvariant());
    }
}
