using MoeServer.Kernels.Config;
using MoeServer.Kernels.Model;
using MoeServer.Kernels.Tests.Reference;
using MoeServer.Kernels.Tests.Support;

namespace MoeServer.Kernels.Tests.Model;

public class GreedyGenerationTests
{
    public static TheoryData<ModelArchitecture> Families =>
        new() { ModelArchitecture.Mixtral, ModelArchitecture.Qwen2Moe, ModelArchitecture.Qwen3Moe, ModelArchitecture.Olmoe };

    /// <summary>
    /// Greedy decoding in fp32 picks the reference's argmax at every step, up to the first step where the
    /// reference's top-2 margin is below 1e-4 (a near-tie either answer is right for). Such steps must be rare.
    /// </summary>
    [Theory]
    [MemberData(nameof(Families))]
    public void Greedy_generation_matches_reference_model(ModelArchitecture arch)
    {
        string dir = TinyCheckpoints.Get(arch);
        var reference = ReferenceModel.Load(dir);
        using var model = MoeModel.Load(dir, WeightPrecision.F32);
        int[] prompt = [11, 22, 33, 44];
        using var seq = model.NewSequence();
        var rseq = reference.NewSequence();
        var logits = model.ForwardSequence(seq, prompt)[^1];
        var rlogits = reference.Forward(rseq, prompt)[^1];
        int compared = 0;
        for (int step = 0; step < 24; step++)
        {
            int want = ArgMax(rlogits);
            if (ReferenceModel.TopTwoMargin(rlogits) < 1e-4) break; // near-tie: stop comparing here
            Assert.Equal(want, ArgMax(logits));
            compared++;
            logits = model.ForwardSequence(seq, [want])[0];
            rlogits = reference.Forward(rseq, [want])[0];
        }
        Assert.True(compared >= 20, $"only {compared} of 24 steps were comparable (too many near-ties)");
    }

    private static int ArgMax(double[] x)
    {
        int best = 0;
        for (int i = 1; i < x.Length; i++) if (x[i] > x[best]) best = i;
        return best;
    }

    private static int ArgMax(float[] x)
    {
        int best = 0;
        for (int i = 1; i < x.Length; i++) if (x[i] > x[best]) best = i;
        return best;
    }
}
