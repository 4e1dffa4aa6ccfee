using MoeServer.Kernels.Config;
using MoeServer.Kernels.Model;
using MoeServer.Kernels.Tests.Support;

namespace MoeServer.Kernels.Tests.Model;

public class KvCachePrefixTests
{
    public static TheoryData<ModelArchitecture> Families =>
        new() { ModelArchitecture.Mixtral, ModelArchitecture.Qwen2Moe, ModelArchitecture.Qwen3Moe, ModelArchitecture.Olmoe, ModelArchitecture.RouterDecoupled };

    private static readonly int[] Prompt = [3, 41, 97, 260, 15, 8, 300, 77, 129, 5, 411, 64];

    /// <summary>A cache started from another sequence's first positions continues as if it had run them itself: the
    /// rest of the prompt gives the logits of running the whole prompt (and for readme_moe, the router's cache too).</summary>
    [Theory]
    [MemberData(nameof(Families))]
    public void A_copied_prefix_gives_the_logits_of_running_the_whole_prompt(ModelArchitecture arch)
    {
        using var model = MoeModel.Load(TinyCheckpoints.Get(arch), WeightPrecision.F32);
        using var whole = model.NewSequence();
        var want = model.ForwardSequence(whole, Prompt);
        using var source = model.NewSequence(4); // grown past its first capacity: the copy reads the live tensors
        model.ForwardSequence(source, Prompt[..10]);
        using var copy = model.NewSequence(2);
        copy.CopyPrefixFrom(source, 8);
        Assert.Equal(8, copy.Length);
        var got = model.ForwardSequence(copy, Prompt[8..]);
        for (int i = 0; i < got.Length; i++)
        {
            double diff = got[i].Zip(want[8 + i]).Max(x => Math.Abs(x.First - x.Second));
            Assert.True(diff < 1e-4, $"position {8 + i}: max |logit diff| {diff}");
        }
        // the source is untouched: it goes on from its own 10 positions
        var next = model.ForwardSequence(source, Prompt[10..]);
        Assert.True(next[^1].Zip(want[^1]).Max(x => Math.Abs(x.First - x.Second)) < 1e-4);
    }

    [Fact]
    public void A_prefix_goes_only_into_an_empty_cache_of_the_same_model_and_no_longer_than_the_source()
    {
        using var model = MoeModel.Load(TinyCheckpoints.Get(ModelArchitecture.Mixtral), WeightPrecision.F32);
        using var other = MoeModel.Load(TinyCheckpoints.Get(ModelArchitecture.RouterDecoupled), WeightPrecision.F32);
        using var source = model.NewSequence();
        model.ForwardSequence(source, Prompt[..6]);
        using var full = model.NewSequence();
        model.ForwardSequence(full, Prompt[..2]);
        Assert.Throws<InvalidOperationException>(() => full.CopyPrefixFrom(source, 3));
        using var empty = model.NewSequence();
        Assert.Throws<ArgumentOutOfRangeException>(() => empty.CopyPrefixFrom(source, 7));
        using var foreign = other.NewSequence();
        Assert.Throws<ArgumentException>(() => foreign.CopyPrefixFrom(source, 3));
        empty.CopyPrefixFrom(source, 0);
        Assert.Equal(0, empty.Length);
    }
}
