using MoeServer.Actors.Generation;

namespace MoeServer.Gateway.Serving;

/// <summary>
/// One API request as engine work: a generation per choice (n choices per prompt, prompts in order: choice
/// index = prompt index * n + i), all admitted together or not at all.
/// </summary>
/// <param name="RequestId">The request id the client sees (x-request-id); choices run as "{id}-{i}" when there are several.</param>
/// <param name="PromptTexts">The text of each prompt (for echo and logs), in prompt order.</param>
public sealed record GenerationJob(
    string RequestId,
    IReadOnlyList<GenerationRequest> Choices,
    int ChoicesPerPrompt,
    bool Logprobs,
    int TopLogprobs,
    bool IncludeUsage);
