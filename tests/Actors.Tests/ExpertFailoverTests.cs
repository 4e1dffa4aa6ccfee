using MoeServer.Actors.Experts;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Model;
using MoeServer.Kernels.Tests.Support;

namespace MoeServer.Actors.Tests;

/// <summary>
/// The gateway's failover bookkeeping without a node: which experts are computed locally, when they go back to their
/// shard, what is probed; and that the local copy computes what the model's own expert computes.
/// </summary>
public class ExpertFailoverTests
{
    private const string NodeA = "akka.tcp://moe@127.0.0.1:4054";
    private const string NodeB = "akka.tcp://moe@127.0.0.1:4055";
    private static readonly DateTime T0 = new(2026, 12, 2, 12, 0, 0, DateTimeKind.Utc);

    private static ExpertFailover NewFailover(string dir, string budget = "all")
    {
        var source = new ExpertWeightSource(dir, WeightPrecision.F32, "cpu");
        var options = ExpertResidencyOptions.ParseBudget(budget, new ExpertResidencyOptions { Policy = "lru", Prefetch = false });
        var cfg = source.Config;
        return new ExpertFailover(new ExpertResidency(source, options, 3L * cfg.ExpertIntermediateSize * cfg.HiddenSize * 4), TimeSpan.FromSeconds(1));
    }

    private static HostHealth AllUp(string _) => HostHealth.Up;

    [Fact]
    public void A_timeout_moves_the_expert_and_every_expert_of_its_node_here_until_they_answer_again()
    {
        using var f = NewFailover(TinyCheckpoints.Get(ModelArchitecture.Mixtral));
        ExpertId a1 = new(0, 1), a2 = new(1, 3), b1 = new(0, 2), unknown = new(1, 0);
        f.Answered(a1, NodeA);
        f.Answered(a2, NodeA);
        f.Answered(b1, NodeB);
        Assert.False(f.ComputesLocally(a1, AllUp, T0));

        f.TimedOut([a1], T0);
        Assert.True(f.ComputesLocally(a1, AllUp, T0));
        Assert.True(f.ComputesLocally(a2, AllUp, T0)); // same node: no second timeout to wait out
        Assert.False(f.ComputesLocally(b1, AllUp, T0));
        Assert.False(f.ComputesLocally(unknown, AllUp, T0)); // never answered: sent to its shard
        Assert.Equal(2, f.LocalCount);

        // A probe's pong from the new owner brings a1 back; a2 stays here until it answers too.
        f.Answered(a1, NodeB);
        Assert.False(f.ComputesLocally(a1, AllUp, T0));
        Assert.True(f.ComputesLocally(a2, AllUp, T0));
        Assert.Equal(1, f.LocalCount);
        Assert.Equal(2, f.Switches);
    }

    [Fact]
    public void An_unreachable_or_gone_node_sends_its_experts_here_without_a_timeout()
    {
        using var f = NewFailover(TinyCheckpoints.Get(ModelArchitecture.Mixtral));
        ExpertId a = new(0, 1), b = new(0, 2);
        f.Answered(a, NodeA);
        f.Answered(b, NodeB);
        HostHealth Health(string n) => n == NodeA ? HostHealth.Unreachable : n == NodeB ? HostHealth.Gone : HostHealth.Up;
        Assert.True(f.ComputesLocally(a, Health, T0));
        Assert.True(f.ComputesLocally(b, Health, T0));
        Assert.Equal(T0, f.LocalSince(a));
    }

    [Fact]
    public void Local_experts_are_probed_once_per_interval()
    {
        using var f = NewFailover(TinyCheckpoints.Get(ModelArchitecture.Mixtral));
        Assert.Empty(f.DueForProbe(T0)); // nothing local: nothing to probe
        ExpertId a = new(0, 1), b = new(1, 1);
        f.Answered(a, NodeA);
        f.Answered(b, NodeA);
        f.TimedOut([a, b], T0);
        Assert.Equal(new[] { a, b }.OrderBy(e => e.EntityId), f.DueForProbe(T0).OrderBy(e => e.EntityId));
        Assert.Empty(f.DueForProbe(T0.AddMilliseconds(500)));
        Assert.Equal(2, f.DueForProbe(T0.AddSeconds(1)).Count);
        f.Answered(a, NodeB);
        f.Answered(b, NodeB);
        Assert.Empty(f.DueForProbe(T0.AddSeconds(5)));
    }

    [Theory]
    [InlineData(ModelArchitecture.Mixtral)]
    [InlineData(ModelArchitecture.Qwen2Moe)]
    public void The_local_copy_computes_what_the_models_expert_computes(ModelArchitecture arch)
    {
        string dir = TinyCheckpoints.Get(arch);
        using var model = MoeModel.Load(dir, WeightPrecision.F32);
        using var f = NewFailover(dir, budget: "1"); // one resident at a time: every call evicts and reloads
        var cfg = model.Config;
        var rng = new Random(7);
        int layer = Enumerable.Range(0, cfg.NumLayers).First(cfg.IsSparseLayer);
        for (int e = 0; e < Math.Min(3, cfg.NumExperts); e++)
        {
            int rows = 1 + e * 2;
            var x = Enumerable.Range(0, rows * cfg.HiddenSize).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
            using var input = TorchSharp.torch.tensor(x, [rows, cfg.HiddenSize]);
            using var expected = model.RunExpert(layer, e, input);
            var want = expected.data<float>().ToArray();
            var got = f.Compute(new ExpertId(layer, e), new ActivationBlock(rows, cfg.HiddenSize, x), step: e);
            Assert.Equal(want.Length, got.Length);
            for (int i = 0; i < want.Length; i++) Assert.True(Math.Abs(want[i] - got[i]) <= 1e-5f * (1 + Math.Abs(want[i])), $"expert {e} [{i}]: {got[i]} vs {want[i]}");
        }
        Assert.Equal(Math.Min(3, cfg.NumExperts), f.Batches);
        Assert.Equal(1, f.Weights.ResidentCount);
    }
}
