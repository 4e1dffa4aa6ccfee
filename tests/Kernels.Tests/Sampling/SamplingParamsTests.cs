using MoeServer.Kernels.Sampling;

namespace MoeServer.Kernels.Tests.Sampling;

public class SamplingParamsTests
{
    [Fact]
    public void Defaults_are_valid_and_switch_everything_off()
    {
        var p = new SamplingParams();
        Assert.Empty(p.GetValidationErrors());
        p.Validate();
        Assert.Equal(1f, p.Temperature);
        Assert.Null(p.TopK);
        Assert.Equal(1f, p.TopP);
        Assert.Equal(0f, p.MinP);
        Assert.Equal(1f, p.RepetitionPenalty);
        Assert.False(p.IsGreedy);
        Assert.True(SamplingParams.Greedy.IsGreedy);
    }

    public static TheoryData<SamplingParams, string> InvalidSettings => new()
    {
        { new SamplingParams { Temperature = -0.5f }, nameof(SamplingParams.Temperature) },
        { new SamplingParams { Temperature = float.NaN }, nameof(SamplingParams.Temperature) },
        { new SamplingParams { TopK = -1 }, nameof(SamplingParams.TopK) },
        { new SamplingParams { TopP = 0f }, nameof(SamplingParams.TopP) },
        { new SamplingParams { TopP = 1.5f }, nameof(SamplingParams.TopP) },
        { new SamplingParams { MinP = -0.1f }, nameof(SamplingParams.MinP) },
        { new SamplingParams { MinP = 1.1f }, nameof(SamplingParams.MinP) },
        { new SamplingParams { RepetitionPenalty = 0f }, nameof(SamplingParams.RepetitionPenalty) },
        { new SamplingParams { PresencePenalty = 2.5f }, nameof(SamplingParams.PresencePenalty) },
        { new SamplingParams { FrequencyPenalty = -3f }, nameof(SamplingParams.FrequencyPenalty) },
        { new SamplingParams { LogitBias = new Dictionary<int, float> { [5] = 150f } }, nameof(SamplingParams.LogitBias) },
        { new SamplingParams { LogitBias = new Dictionary<int, float> { [-1] = 1f } }, nameof(SamplingParams.LogitBias) },
        { new SamplingParams { MaxTokens = 0 }, nameof(SamplingParams.MaxTokens) },
        { new SamplingParams { StopStrings = ["ok", ""] }, nameof(SamplingParams.StopStrings) },
        { new SamplingParams { StopTokenIds = [-3] }, nameof(SamplingParams.StopTokenIds) },
        { new SamplingParams { Logprobs = true, TopLogprobs = 21 }, nameof(SamplingParams.TopLogprobs) },
        { new SamplingParams { TopLogprobs = 3 }, nameof(SamplingParams.TopLogprobs) },
    };

    [Theory]
    [MemberData(nameof(InvalidSettings))]
    public void Validation_message_names_the_invalid_field(SamplingParams p, string field)
    {
        var error = Assert.Single(p.GetValidationErrors());
        Assert.Equal(field, error.Field);
        Assert.StartsWith(field + " ", error.Message, StringComparison.Ordinal);

        var ex = Assert.Throws<ArgumentException>(() => p.Validate());
        Assert.Equal(field, ex.ParamName);
        Assert.Contains(field, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Every_invalid_field_is_reported()
    {
        var p = new SamplingParams { Temperature = -1f, TopP = 2f, MinP = 3f };
        var fields = p.GetValidationErrors().Select(e => e.Field).ToArray();
        Assert.Equal(["Temperature", "TopP", "MinP"], fields);

        var ex = Assert.Throws<ArgumentException>(() => p.Validate());
        Assert.Equal("Temperature", ex.ParamName);
        Assert.Contains("TopP", ex.Message, StringComparison.Ordinal);
        Assert.Contains("MinP", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Token_ids_are_checked_against_the_vocabulary_when_given()
    {
        var p = new SamplingParams
        {
            LogitBias = new Dictionary<int, float> { [10] = 1f },
            StopTokenIds = [9, 10],
        };
        Assert.Empty(p.GetValidationErrors());
        var errors = p.GetValidationErrors(vocabSize: 10);
        Assert.Equal(["LogitBias", "StopTokenIds"], errors.Select(e => e.Field).ToArray());
        Assert.All(errors, e => Assert.Contains("10", e.Message, StringComparison.Ordinal));
    }

    [Fact]
    public void Boundary_values_are_accepted()
    {
        var p = new SamplingParams
        {
            Temperature = 0f, TopK = 0, TopP = 1f, MinP = 1f, RepetitionPenalty = 0.5f,
            PresencePenalty = -2f, FrequencyPenalty = 2f,
            LogitBias = new Dictionary<int, float> { [0] = -100f, [1] = 100f },
            MaxTokens = 1, Logprobs = true, TopLogprobs = 20, Seed = long.MinValue,
        };
        Assert.Empty(p.GetValidationErrors(vocabSize: 2));
    }

    [Fact]
    public void Sampler_rejects_invalid_settings_naming_the_field()
    {
        var ex = Assert.Throws<ArgumentException>(() => new TokenSampler(new SamplingParams { TopP = 2f }, []));
        Assert.Equal("TopP", ex.ParamName);
    }
}
