using MoeServer.Kernels.Sampling;
using static MoeServer.Kernels.Tests.Sampling.SamplingTestUtil;

namespace MoeServer.Kernels.Tests.Sampling;

public class TokenSamplerTests
{
    // ---- greedy -------------------------------------------------------------------------------------------------

    [Fact]
    public void Greedy_picks_argmax()
    {
        var sampler = new TokenSampler(SamplingParams.Greedy, []);
        for (int seed = 0; seed < 20; seed++)
        {
            var logits = RandomLogits(1000 + seed * 37, seed);
            int expected = Array.IndexOf(logits, logits.Max());
            Assert.Equal(expected, sampler.Sample(logits).TokenId);
        }
    }

    [Fact]
    public void Greedy_breaks_ties_toward_the_lower_id()
    {
        var sampler = new TokenSampler(SamplingParams.Greedy, []);
        Assert.Equal(2, sampler.Sample([0f, 1f, 3f, 3f, 3f]).TokenId);
    }

    [Fact]
    public void Greedy_ignores_masked_tokens()
    {
        var sampler = new TokenSampler(SamplingParams.Greedy, []);
        Assert.Equal(3, sampler.Sample([float.NegativeInfinity, -5f, float.NegativeInfinity, -1f]).TokenId);
    }

    [Fact]
    public void Tiny_temperature_is_greedy()
    {
        var sampler = new TokenSampler(new SamplingParams { Temperature = 1e-6f }, []);
        var logits = LogitsOf(0.3, 0.4, 0.3);
        Assert.All(Enumerable.Range(0, 50), _ => Assert.Equal(1, sampler.Sample(logits).TokenId));
    }

    // ---- seeds --------------------------------------------------------------------------------------------------

    [Fact]
    public void Same_seed_gives_same_tokens()
    {
        var p = new SamplingParams { Seed = 1234, TopP = 0.95f, TopK = 50 };
        var a = new TokenSampler(p, [1, 2, 3]);
        var b = new TokenSampler(p, [1, 2, 3]);
        for (int step = 0; step < 200; step++)
        {
            var logits = RandomLogits(4096, step, scale: 1.5);
            Assert.Equal(a.Sample(logits).TokenId, b.Sample(logits).TokenId);
        }
    }

    [Fact]
    public void Different_seeds_give_different_tokens()
    {
        var logits = new float[50]; // uniform over 50 tokens
        var a = new TokenSampler(new SamplingParams { Seed = 1 }, []);
        var b = new TokenSampler(new SamplingParams { Seed = 2 }, []);
        int differing = 0;
        for (int i = 0; i < 200; i++)
        {
            if (a.Sample(logits).TokenId != b.Sample(logits).TokenId) differing++;
        }
        Assert.True(differing > 150, $"only {differing} of 200 draws differ");
    }

    [Fact]
    public void Seeded_draws_are_the_same_on_every_platform()
    {
        // A golden sequence computed independently (Python reference of SplitMix64-seeded xoshiro256**, u = next >> 11
        // / 2^53, token = first id whose cumulative probability exceeds u). The PRNG is integer-only and no draw lies
        // within 1e-3 of the boundaries 0.5 and 0.8, so this must hold on every runtime and machine.
        var sampler = new TokenSampler(new SamplingParams { Seed = 42 }, []);
        var logits = LogitsOf(0.5, 0.3, 0.2);
        var tokens = Enumerable.Range(0, 24).Select(_ => sampler.Sample(logits).TokenId).ToArray();
        Assert.Equal(Golden, tokens);
    }

    private static readonly int[] Golden = [0, 0, 1, 2, 2, 1, 1, 2, 1, 1, 1, 0, 2, 0, 1, 2, 1, 2, 1, 1, 0, 0, 0, 1];

    [Fact]
    public void Unseeded_samplers_draw_their_own_random_seeds()
    {
        var seeds = Enumerable.Range(0, 8).Select(_ => new TokenSampler(new SamplingParams(), []).Seed).ToHashSet();
        Assert.Equal(8, seeds.Count);
        Assert.Equal(77L, new TokenSampler(new SamplingParams { Seed = 77 }, []).Seed);
    }

    // ---- temperature --------------------------------------------------------------------------------------------

    [Theory]
    [InlineData(0.5)]
    [InlineData(1.0)]
    [InlineData(2.0)]
    public void Temperature_scales_the_logits_before_softmax(double temperature)
    {
        float[] logits = [1f, 2f, 3f, 0.5f];
        var sampler = new TokenSampler(new SamplingParams { Temperature = (float)temperature }, []);
        var expected = Softmax(logits, temperature);
        var dist = sampler.CandidateDistribution(logits);
        Assert.Equal([0, 1, 2, 3], dist.Select(d => d.TokenId).ToArray());
        for (int i = 0; i < 4; i++) Assert.Equal(expected[i], dist[i].Probability, 1e-6);
    }

    [Fact]
    public void Low_temperature_sharpens_and_high_temperature_flattens()
    {
        float[] logits = [1f, 2f, 3f];
        double TopShare(float t) =>
            Counts(new TokenSampler(new SamplingParams { Temperature = t, Seed = 5 }, []), logits, 20_000)[2] / 20_000.0;

        double sharp = TopShare(0.5f), plain = TopShare(1f), flat = TopShare(2f);
        Assert.True(sharp > plain && plain > flat, $"{sharp} {plain} {flat}");

        var counts = Counts(new TokenSampler(new SamplingParams { Temperature = 0.5f, Seed = 6 }, []), logits, 20_000);
        Assert.True(ChiSquare(counts, Softmax(logits, 0.5)) < ChiSquareCritical001[2]);
    }

    [Fact]
    public void Sampling_without_truncation_follows_the_softmax()
    {
        var logits = LogitsOf(0.1, 0.2, 0.3, 0.4);
        var counts = Counts(new TokenSampler(new SamplingParams { Seed = 7 }, []), logits, 20_000);
        double chi = ChiSquare(counts, [0.1, 0.2, 0.3, 0.4]);
        Assert.True(chi < ChiSquareCritical001[3], $"chi-square {chi}");
    }

    [Fact]
    public void Sampling_across_many_blocks_of_the_vocabulary_follows_the_softmax()
    {
        // 5000 tokens (several 1024-token blocks): three heavy tokens in different blocks, the rest share 10%.
        const int vocab = 5000;
        var probs = Enumerable.Repeat(0.1 / (vocab - 3), vocab).ToArray();
        probs[100] = 0.2;
        probs[1500] = 0.3;
        probs[4999] = 0.4;
        var counts = Counts(new TokenSampler(new SamplingParams { Seed = 8 }, []), LogitsOf(probs), 20_000);
        int[] observed = [counts[100], counts[1500], counts[4999], counts.Sum() - counts[100] - counts[1500] - counts[4999]];
        double chi = ChiSquare(observed, [0.2, 0.3, 0.4, 0.1]);
        Assert.True(chi < ChiSquareCritical001[3], $"chi-square {chi}");
    }

    [Fact]
    public void Masked_tokens_are_never_sampled()
    {
        float[] logits = [0f, float.NegativeInfinity, 0f, float.NegativeInfinity];
        foreach (var p in new[] { new SamplingParams { Seed = 3 }, new SamplingParams { Seed = 3, TopP = 0.99f }, new SamplingParams { Seed = 3, TopK = 3 } })
        {
            var counts = Counts(new TokenSampler(p, []), logits, 2000);
            Assert.Equal(0, counts[1] + counts[3]);
            Assert.True(counts[0] > 800 && counts[2] > 800);
        }
    }

    // ---- top-k --------------------------------------------------------------------------------------------------

    [Fact]
    public void Top_k_1_equals_greedy()
    {
        var greedy = new TokenSampler(SamplingParams.Greedy, []);
        var topK1 = new TokenSampler(new SamplingParams { TopK = 1, Temperature = 1.5f, Seed = 9 }, []);
        for (int seed = 0; seed < 30; seed++)
        {
            var logits = RandomLogits(3000, seed);
            if (seed % 3 == 0) logits[seed * 11] = logits[seed * 11 + 1] = logits.Max() + 1f; // a tie for the top
            Assert.Equal(greedy.Sample(logits).TokenId, topK1.Sample(logits).TokenId);
        }
    }

    [Fact]
    public void Top_k_keeps_exactly_the_k_highest()
    {
        var logits = RandomLogits(50_000, 10);
        for (int i = 0; i < 50_000; i += 97) logits[i] = 4f; // ties straddling the cut
        var sampler = new TokenSampler(new SamplingParams { TopK = 40, Seed = 1 }, []);
        var dist = sampler.CandidateDistribution(logits);

        Assert.Equal(RankedIds(logits).Take(40).ToArray(), dist.Select(d => d.TokenId).ToArray());
        var expected = Softmax(dist.Select(d => logits[d.TokenId]).ToArray());
        for (int i = 0; i < 40; i++) Assert.Equal(expected[i], dist[i].Probability, 1e-6);
    }

    [Fact]
    public void Top_k_holds_when_the_sampled_cut_misses()
    {
        // The strided sample sees only masked or low tokens, so its cut estimate is useless; the result must not care.
        const int vocab = 40_000;
        var logits = Enumerable.Repeat(-1f, vocab).ToArray();
        for (int i = 0; i < vocab; i += 19) logits[i] = float.NegativeInfinity;   // every stride point masked
        for (int i = 1; i < 300; i++) logits[i * 131] = 2f + i * 0.001f;         // the real top is elsewhere
        var dist = new TokenSampler(new SamplingParams { TopK = 250 }, []).CandidateDistribution(logits);
        Assert.Equal(RankedIds(logits).Take(250).ToArray(), dist.Select(d => d.TokenId).ToArray());
    }

    [Fact]
    public void Top_k_holds_when_the_sampled_cut_is_too_high()
    {
        // Only the strided sample points are high and all distinct, so the cut taken from the sample lets through
        // fewer than k tokens and the sampler must widen the pool.
        const int vocab = 40_000, stride = vocab / 2048;
        var logits = Enumerable.Repeat(-1f, vocab).ToArray();
        for (int i = 0; i < 2048; i++) logits[i * stride] = 5f + i * 0.001f;
        var dist = new TokenSampler(new SamplingParams { TopK = 3000 }, []).CandidateDistribution(logits);
        Assert.Equal(RankedIds(logits).Take(3000).ToArray(), dist.Select(d => d.TokenId).ToArray());
    }

    [Fact]
    public void Top_k_with_more_than_the_unmasked_tokens_keeps_them_all()
    {
        float[] logits = [0f, float.NegativeInfinity, 1f, float.NegativeInfinity, 2f];
        var dist = new TokenSampler(new SamplingParams { TopK = 4 }, []).CandidateDistribution(logits);
        Assert.Equal([4, 2, 0], dist.Select(d => d.TokenId).ToArray());
    }

    [Theory]
    [InlineData(100, 0.9f)]
    [InlineData(5000, 0.5f)]
    public void Top_k_then_top_p_on_a_large_vocabulary_matches_a_full_sort(int topK, float topP)
    {
        var logits = RandomLogits(150_000, 21, 2);
        var dist = new TokenSampler(new SamplingParams { TopK = topK, TopP = topP, Temperature = 0.9f }, []).CandidateDistribution(logits);

        var ranked = RankedIds(logits).Take(topK).ToArray();
        var probs = Softmax(ranked.Select(i => logits[i]).ToArray(), 0.9);
        int expectedCount = 0;
        double cumulative = 0;
        while (cumulative < topP) cumulative += probs[expectedCount++];

        Assert.InRange(dist.Count, expectedCount - 1, expectedCount + 1);
        Assert.Equal(ranked.Take(dist.Count).ToArray(), dist.Select(d => d.TokenId).ToArray());
        for (int j = 0; j < dist.Count; j++) Assert.Equal(probs[j] / probs.Take(dist.Count).Sum(), dist[j].Probability, 1e-5);
    }

    [Fact]
    public void Top_k_empirical_frequencies_match_the_renormalised_top_k()
    {
        var logits = LogitsOf(0.05, 0.4, 0.1, 0.3, 0.15);
        var counts = Counts(new TokenSampler(new SamplingParams { TopK = 2, Seed = 11 }, []), logits, 20_000);
        Assert.Equal(20_000, counts[1] + counts[3]);
        double chi = ChiSquare([counts[1], counts[3]], [0.4 / 0.7, 0.3 / 0.7]);
        Assert.True(chi < ChiSquareCritical001[1], $"chi-square {chi}");
    }

    [Fact]
    public void Top_k_larger_than_the_vocabulary_is_off()
    {
        var logits = LogitsOf(0.5, 0.25, 0.25);
        var dist = new TokenSampler(new SamplingParams { TopK = 10 }, []).CandidateDistribution(logits);
        Assert.Equal(3, dist.Count);
    }

    // ---- top-p --------------------------------------------------------------------------------------------------

    // Probabilities by id: sorted order is 3 (0.4), 0 (0.25), 5 (0.15), 1 (0.1), 4 (0.06), 2 (0.04).
    private static readonly double[] NucleusProbs = [0.25, 0.1, 0.04, 0.4, 0.06, 0.15];

    [Theory]
    [InlineData(0.3, new[] { 3 })]
    [InlineData(0.4, new[] { 3 })]            // exactly reached by the first token
    [InlineData(0.65, new[] { 3, 0 })]        // exactly reached by two: no third token
    [InlineData(0.66, new[] { 3, 0, 5 })]
    [InlineData(0.9, new[] { 3, 0, 5, 1 })]
    [InlineData(0.95, new[] { 3, 0, 5, 1, 4 })]
    [InlineData(0.999, new[] { 3, 0, 5, 1, 4, 2 })]
    public void Top_p_keeps_the_smallest_set_whose_mass_reaches_p(double topP, int[] expectedIds)
    {
        var sampler = new TokenSampler(new SamplingParams { TopP = (float)topP }, []);
        var dist = sampler.CandidateDistribution(LogitsOf(NucleusProbs));
        Assert.Equal(expectedIds, dist.Select(d => d.TokenId).ToArray());
        double kept = expectedIds.Sum(id => NucleusProbs[id]);
        foreach (var (id, prob) in dist) Assert.Equal(NucleusProbs[id] / kept, prob, 1e-6);
    }

    [Fact]
    public void Top_p_empirical_frequencies_match_the_renormalised_nucleus()
    {
        var sampler = new TokenSampler(new SamplingParams { TopP = 0.7f, Seed = 12 }, []);
        var counts = Counts(sampler, LogitsOf(NucleusProbs), 30_000);
        Assert.Equal(0, counts[1] + counts[2] + counts[4]);   // outside the nucleus {3, 0, 5}
        double chi = ChiSquare([counts[3], counts[0], counts[5]], [0.4 / 0.8, 0.25 / 0.8, 0.15 / 0.8]);
        Assert.True(chi < ChiSquareCritical001[2], $"chi-square {chi}");
    }

    [Theory]
    [InlineData(0.9f, 0.8f, 3.0)]
    [InlineData(0.5f, 1.0f, 1.0)]
    [InlineData(0.95f, 1.3f, 0.3)]
    public void Top_p_on_a_large_vocabulary_matches_a_full_sort(float topP, float temperature, double scale)
    {
        const int vocab = 150_000;
        var logits = RandomLogits(vocab, 13, scale);
        var dist = new TokenSampler(new SamplingParams { TopP = topP, Temperature = temperature }, []).CandidateDistribution(logits);

        var ranked = RankedIds(logits);
        var probs = Softmax(logits, temperature);
        int expectedCount = 0;
        double cumulative = 0;
        while (cumulative < topP) cumulative += probs[ranked[expectedCount++]];

        // Float rounding may move a cut that lands within ~1e-6 of p by one token; the kept set is still the top.
        Assert.InRange(dist.Count, expectedCount - 1, expectedCount + 1);
        Assert.Equal(ranked.Take(dist.Count).ToArray(), dist.Select(d => d.TokenId).ToArray());
        Assert.True(expectedCount > 30, "the nucleus should be large enough to need several bands");
    }

    [Fact]
    public void Top_p_applies_to_the_top_k_renormalised_mass()
    {
        // Top-k 3 keeps 0.4, 0.25, 0.15 (mass 0.8); top-p 0.7 of that is 0.56: {3, 0} (0.65/0.8 = 0.8125).
        var sampler = new TokenSampler(new SamplingParams { TopK = 3, TopP = 0.7f }, []);
        var dist = sampler.CandidateDistribution(LogitsOf(NucleusProbs));
        Assert.Equal([3, 0], dist.Select(d => d.TokenId).ToArray());
    }

    // ---- min-p --------------------------------------------------------------------------------------------------

    [Fact]
    public void Min_p_drops_tokens_below_a_fraction_of_the_top_probability()
    {
        // Top probability 0.5, min-p 0.25: threshold 0.125 keeps 0.5, 0.2 and 0.15.
        var logits = LogitsOf(0.5, 0.2, 0.1, 0.05, 0.15);
        var sampler = new TokenSampler(new SamplingParams { MinP = 0.25f, Seed = 14 }, []);
        var dist = sampler.CandidateDistribution(logits);
        Assert.Equal([0, 1, 4], dist.Select(d => d.TokenId).ToArray());
        Assert.Equal(0.5 / 0.85, dist[0].Probability, 1e-6);

        var counts = Counts(sampler, logits, 20_000);
        Assert.Equal(0, counts[2] + counts[3]);
        double chi = ChiSquare([counts[0], counts[1], counts[4]], [0.5 / 0.85, 0.2 / 0.85, 0.15 / 0.85]);
        Assert.True(chi < ChiSquareCritical001[2], $"chi-square {chi}");
    }

    [Fact]
    public void Min_p_is_relative_to_the_tempered_distribution()
    {
        // At temperature 0.5 probabilities go as p^2: 0.25, 0.04, 0.01, 0.0025, 0.0225 (relative to the top 0.25).
        // Min-p 0.1 keeps ratios >= 0.1: 1, 0.16, 0.09 (no), 0.01 (no), 0.09 (no).
        var logits = LogitsOf(0.5, 0.2, 0.1, 0.05, 0.15);
        var dist = new TokenSampler(new SamplingParams { MinP = 0.1f, Temperature = 0.5f }, []).CandidateDistribution(logits);
        Assert.Equal([0, 1], dist.Select(d => d.TokenId).ToArray());
    }

    [Fact]
    public void Min_p_after_top_p_cuts_the_sorted_candidates()
    {
        var logits = LogitsOf(NucleusProbs);
        var dist = new TokenSampler(new SamplingParams { TopP = 0.95f, MinP = 0.3f }, []).CandidateDistribution(logits);
        // Nucleus {3, 0, 5, 1, 4}; threshold 0.3 * 0.4 = 0.12 keeps 0.4, 0.25, 0.15.
        Assert.Equal([3, 0, 5], dist.Select(d => d.TokenId).ToArray());
    }

    // ---- penalties and bias -------------------------------------------------------------------------------------

    [Fact]
    public void Repetition_penalty_divides_positive_and_multiplies_negative_logits_of_seen_tokens()
    {
        float[] logits = [2f, -2f, 1f, 0.5f, -1f, 3f];
        var sampler = new TokenSampler(new SamplingParams { RepetitionPenalty = 2f, Seed = 1 }, [0, 1, 1, 0]);
        Assert.Equal([1f, -4f, 1f, 0.5f, -1f, 3f], sampler.ProcessedLogits(logits));

        Force(sampler, 6, 3);   // a generated token counts too
        Force(sampler, 6, 1);   // seen in prompt and output: still penalised once
        Force(sampler, 6, 3);
        Assert.Equal([1f, -4f, 1f, 0.25f, -1f, 3f], sampler.ProcessedLogits(logits));
    }

    [Fact]
    public void Repetition_penalty_below_one_rewards_seen_tokens()
    {
        var sampler = new TokenSampler(new SamplingParams { RepetitionPenalty = 0.5f }, [0, 1]);
        Assert.Equal([4f, -1f, 1f], sampler.ProcessedLogits([2f, -2f, 1f]));
    }

    [Fact]
    public void Frequency_and_presence_penalties_count_generated_tokens_only()
    {
        var sampler = new TokenSampler(new SamplingParams { FrequencyPenalty = 0.5f, PresencePenalty = 0.25f, Seed = 1 }, [0, 0, 0]);
        Force(sampler, 5, 2);
        Force(sampler, 5, 2);
        Force(sampler, 5, 3);
        // token 2: 1 - 2 * 0.5 - 0.25; token 3: 1 - 0.5 - 0.25; prompt token 0 untouched.
        Assert.Equal([1f, 1f, -0.25f, 0.25f, 1f], sampler.ProcessedLogits([1f, 1f, 1f, 1f, 1f]));
    }

    [Fact]
    public void Negative_presence_and_frequency_penalties_encourage_repetition()
    {
        var sampler = new TokenSampler(new SamplingParams { FrequencyPenalty = -1f, PresencePenalty = -0.5f, Seed = 1 }, []);
        Force(sampler, 3, 1);
        Assert.Equal([0f, 1.5f, 0f], sampler.ProcessedLogits([0f, 0f, 0f]));
    }

    [Fact]
    public void Repetition_penalty_comes_before_frequency_and_presence()
    {
        var sampler = new TokenSampler(
            new SamplingParams { RepetitionPenalty = 2f, FrequencyPenalty = 1f, PresencePenalty = 0.5f, Seed = 1 }, []);
        Force(sampler, 2, 0);
        // (4 / 2) - 1 - 0.5, not (4 - 1.5) / 2.
        Assert.Equal([0.5f, 4f], sampler.ProcessedLogits([4f, 4f]));
    }

    [Fact]
    public void Logit_bias_is_added_before_penalties()
    {
        var sampler = new TokenSampler(
            new SamplingParams { RepetitionPenalty = 2f, LogitBias = new Dictionary<int, float> { [0] = 3f, [2] = -1.5f } },
            [0]);
        // Token 0: (-2 + 3) / 2 = 0.5 (penalty first would give -4 + 3 = -1); token 2 is biased only.
        Assert.Equal([0.5f, 1f, -0.5f], sampler.ProcessedLogits([-2f, 1f, 1f]));
    }

    [Fact]
    public void Logit_bias_can_force_or_ban_a_token()
    {
        var logits = RandomLogits(1000, 15, scale: 1);
        var forced = new TokenSampler(new SamplingParams { LogitBias = new Dictionary<int, float> { [321] = 100f }, Seed = 2 }, []);
        Assert.All(Enumerable.Range(0, 100), _ => Assert.Equal(321, forced.Sample(logits).TokenId));

        var uniform = new float[4];
        var banned = new TokenSampler(new SamplingParams { LogitBias = new Dictionary<int, float> { [2] = -100f }, Seed = 2 }, []);
        Assert.Equal(0, Counts(banned, uniform, 4000)[2]);
    }

    [Fact]
    public void Greedy_applies_bias_and_penalties()
    {
        var sampler = new TokenSampler(new SamplingParams { Temperature = 0f, PresencePenalty = 2f }, []);
        float[] logits = [1f, 2f, 1.5f];
        Assert.Equal(1, sampler.Sample(logits).TokenId);
        Assert.Equal(2, sampler.Sample(logits).TokenId);   // 2 - 2 = 0 < 1.5
        Assert.Equal(0, sampler.Sample(logits).TokenId);   // 1.5 - 2 < 0 < 1
    }

    [Fact]
    public void Output_history_is_recorded()
    {
        var sampler = new TokenSampler(SamplingParams.Greedy, [5, 6]);
        sampler.Sample([0f, 1f]);
        sampler.Sample([1f, 0f]);
        Assert.Equal([1, 0], sampler.OutputTokenIds);
    }

    // ---- logprobs -----------------------------------------------------------------------------------------------

    [Fact]
    public void Logprob_is_the_log_softmax_of_the_raw_logits()
    {
        var logits = RandomLogits(2000, 16);
        var expected = LogSoftmax(logits);
        // Temperature, truncation, bias and penalties change what is drawn but not the reported logprob.
        var sampler = new TokenSampler(new SamplingParams
        {
            Temperature = 0.3f, TopK = 20, TopP = 0.9f, RepetitionPenalty = 1.3f, PresencePenalty = 0.5f,
            LogitBias = new Dictionary<int, float> { [7] = 5f }, Seed = 3,
        }, [7, 8, 9]);
        for (int i = 0; i < 30; i++)
        {
            var s = sampler.Sample(logits);
            Assert.Equal(expected[s.TokenId], s.Logprob, 1e-4);
            Assert.Empty(s.TopLogprobs);
        }
    }

    [Fact]
    public void Top_logprobs_are_the_most_likely_raw_tokens_sorted()
    {
        var logits = RandomLogits(10_000, 17);
        logits[10] = logits[20] = logits[30] = logits.Max() + 0.5f;    // a three-way tie at the top
        logits[40] = float.NegativeInfinity;
        var expected = LogSoftmax(logits);
        var sampler = new TokenSampler(new SamplingParams { Logprobs = true, TopLogprobs = 5, Temperature = 0f, LogitBias = new Dictionary<int, float> { [40] = 100f, [99] = 100f } }, []);

        var s = sampler.Sample(logits);
        Assert.Equal(99, s.TokenId); // the bias changed the choice but not the reported distribution
        Assert.Equal(expected[99], s.Logprob, 1e-4);
        var ranked = RankedIds(logits).Take(5).ToArray();
        Assert.Equal([10, 20, 30], ranked[..3]);
        Assert.Equal(ranked, s.TopLogprobs.Select(t => t.TokenId).ToArray());
        foreach (var t in s.TopLogprobs) Assert.Equal(expected[t.TokenId], t.Logprob, 1e-4);
        Assert.True(s.TopLogprobs.Zip(s.TopLogprobs.Skip(1)).All(pair => pair.First.Logprob >= pair.Second.Logprob));
    }

    [Fact]
    public void Top_logprobs_skip_masked_tokens()
    {
        var sampler = new TokenSampler(new SamplingParams { Logprobs = true, TopLogprobs = 4, Temperature = 0f }, []);
        var s = sampler.Sample([float.NegativeInfinity, 0f, float.NegativeInfinity, 0f]);
        Assert.Equal([1, 3], s.TopLogprobs.Select(t => t.TokenId).ToArray());
        Assert.All(s.TopLogprobs, t => Assert.Equal(Math.Log(0.5), t.Logprob, 1e-6));
        Assert.Equal(Math.Log(0.5), s.Logprob, 1e-6);
    }

    // ---- bad input ----------------------------------------------------------------------------------------------

    [Fact]
    public void NaN_or_positive_infinity_in_the_logits_is_rejected()
    {
        var sampler = new TokenSampler(new SamplingParams(), []);
        var row = new float[100];
        row[57] = float.NaN;
        var ex = Assert.Throws<ArgumentException>(() => sampler.Sample(row));
        Assert.Contains("57", ex.Message, StringComparison.Ordinal);
        row[57] = float.PositiveInfinity;
        Assert.Throws<ArgumentException>(() => sampler.Sample(row));
        Assert.Throws<ArgumentException>(() => sampler.Sample([float.NegativeInfinity, float.NegativeInfinity]));
        Assert.Throws<ArgumentException>(() => sampler.Sample([]));
        Assert.Empty(sampler.OutputTokenIds);
    }

    [Fact]
    public void A_row_shorter_than_a_referenced_token_id_is_rejected()
    {
        var sampler = new TokenSampler(new SamplingParams { LogitBias = new Dictionary<int, float> { [10] = 1f } }, []);
        var ex = Assert.Throws<ArgumentException>(() => sampler.Sample(new float[10]));
        Assert.Contains("10", ex.Message, StringComparison.Ordinal);
    }
}
