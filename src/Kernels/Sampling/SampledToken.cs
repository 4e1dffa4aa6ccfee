namespace MoeServer.Kernels.Sampling;

/// <summary>A token id with its log-probability under the raw model distribution (log-softmax of the logits as the
/// model produced them, before logit bias, penalties, temperature and truncation).</summary>
public readonly record struct TokenLogprob(int TokenId, float Logprob);

/// <summary>Result of <see cref="TokenSampler.Sample"/>.</summary>
/// <param name="TokenId">The chosen token.</param>
/// <param name="Logprob">Its log-probability under the raw model distribution (see <see cref="TokenLogprob"/>);
/// always computed, whether or not <see cref="SamplingParams.Logprobs"/> is set.</param>
/// <param name="TopLogprobs">The <see cref="SamplingParams.TopLogprobs"/> most likely tokens of the raw distribution,
/// highest first (ties: lower id first); they may or may not include the chosen token. Empty when not requested.</param>
public readonly record struct SampledToken(int TokenId, float Logprob, IReadOnlyList<TokenLogprob> TopLogprobs);
