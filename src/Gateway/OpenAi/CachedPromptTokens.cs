using MoeServer.Actors.Generation;
using MoeServer.Gateway.Serving;

namespace MoeServer.Gateway.OpenAi;

/// <summary>
/// A response's <c>prompt_tokens_details.cached_tokens</c>: per prompt the most tokens any of its choices copied from
/// the prefix cache (usage counts each prompt once, however many choices ran it), summed over the prompts.
/// </summary>
internal sealed class CachedPromptTokens(GenerationJob job)
{
    private readonly int[] _byPrompt = new int[(job.Choices.Count + job.ChoicesPerPrompt - 1) / job.ChoicesPerPrompt];

    public void Add(int choice, GenerationUsage? usage)
    {
        if (usage is null) return;
        int prompt = choice / job.ChoicesPerPrompt;
        _byPrompt[prompt] = Math.Max(_byPrompt[prompt], usage.CachedPromptTokens);
    }

    public PromptTokensDetails Details => new(_byPrompt.Sum());
}
