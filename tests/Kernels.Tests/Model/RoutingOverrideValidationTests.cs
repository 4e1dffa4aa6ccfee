using MoeServer.Kernels.Checkpoints;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Model;

namespace MoeServer.Kernels.Tests.Model;

public class RoutingOverrideValidationTests
{
    // Tiny Qwen2-MoE: 2 layers (layer 1 dense via mlp_only_layers), 4 experts.
    private static readonly ModelConfig Cfg = CheckpointPresets.Config(ModelArchitecture.Qwen2Moe, CheckpointPreset.Tiny);

    private static RoutingOverride Disabling(params (int Layer, int Expert)[] experts) =>
        new(DisabledExperts: experts.ToHashSet());

    [Fact]
    public void Test_config_is_what_the_tests_assume()
    {
        Assert.Equal(2, Cfg.NumLayers);
        Assert.Equal(4, Cfg.NumExperts);
        Assert.True(Cfg.IsSparseLayer(0));
        Assert.False(Cfg.IsSparseLayer(1));
    }

    [Fact]
    public void No_override_and_sensible_overrides_are_valid()
    {
        Assert.Empty(RoutingOverride.None.GetValidationErrors(Cfg));
        var ok = new RoutingOverride(TopKExperts: 4, DisabledExperts: new HashSet<(int, int)> { (0, 0), (0, 3) });
        Assert.Empty(ok.GetValidationErrors(Cfg));
        ok.Validate(Cfg);
        Assert.Empty(new RoutingOverride(TopKExperts: 1).GetValidationErrors(Cfg));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-2)]
    [InlineData(5)]
    public void Top_k_outside_one_to_the_number_of_experts_is_refused(int k)
    {
        var errors = new RoutingOverride(TopKExperts: k).GetValidationErrors(Cfg);
        var e = Assert.Single(errors);
        Assert.Contains("top_k_experts", e);
        Assert.Contains("between 1 and 4", e);
        Assert.Contains(k.ToString(System.Globalization.CultureInfo.InvariantCulture), e);
    }

    [Theory]
    [InlineData(-1)]
    [InlineData(2)]
    public void Disabled_expert_of_a_layer_that_does_not_exist_is_refused(int layer)
    {
        var e = Assert.Single(Disabling((layer, 0)).GetValidationErrors(Cfg));
        Assert.Contains("disabled_experts", e);
        Assert.Contains($"layer {layer} does not exist", e);
        Assert.Contains("0..1", e);
    }

    [Fact]
    public void Disabled_expert_of_a_dense_layer_is_refused()
    {
        var e = Assert.Single(Disabling((1, 0)).GetValidationErrors(Cfg));
        Assert.Contains("disabled_experts", e);
        Assert.Contains("layer 1 is a dense MLP layer", e);
    }

    [Theory]
    [InlineData(-1)]
    [InlineData(4)]
    public void Disabled_expert_outside_the_layers_experts_is_refused(int expert)
    {
        var e = Assert.Single(Disabling((0, expert)).GetValidationErrors(Cfg));
        Assert.Contains("disabled_experts", e);
        Assert.Contains($"expert {expert} of layer 0 does not exist", e);
        Assert.Contains("0..3", e);
    }

    [Fact]
    public void Disabling_every_expert_of_a_layer_is_refused()
    {
        var e = Assert.Single(Disabling((0, 0), (0, 1), (0, 2), (0, 3)).GetValidationErrors(Cfg));
        Assert.Contains("disabled_experts", e);
        Assert.Contains("all 4 experts of layer 0 are disabled", e);
        Assert.Empty(Disabling((0, 0), (0, 1), (0, 2)).GetValidationErrors(Cfg));
    }

    [Fact]
    public void Every_problem_is_reported_and_validate_throws_them_all()
    {
        var bad = new RoutingOverride(TopKExperts: 9, DisabledExperts: new HashSet<(int, int)> { (7, 0), (1, 2), (0, 11) });
        Assert.Equal(4, bad.GetValidationErrors(Cfg).Count);
        var ex = Assert.Throws<ArgumentException>(() => bad.Validate(Cfg));
        foreach (string part in new[] { "top_k_experts", "layer 7 does not exist", "layer 1 is a dense", "expert 11 of layer 0" })
            Assert.Contains(part, ex.Message);
    }
}
