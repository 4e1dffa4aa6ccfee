using MoeServer.Kernels.Config;
using MoeServer.Kernels.Formats;
using MoeServer.Kernels.Model;
using MoeServer.Kernels.Tests.Support;
using TorchSharp;
using static TorchSharp.torch;

namespace MoeServer.Kernels.Tests.Model;

/// <summary>The gateway's backbone-only load (<see cref="WeightSet.Backbone"/>): everything but the routed experts.</summary>
public class BackboneLoadTests
{
    public static TheoryData<ModelArchitecture, bool> FamiliesAndLayouts
    {
        get
        {
            var data = new TheoryData<ModelArchitecture, bool>();
            foreach (var arch in new[] { ModelArchitecture.Mixtral, ModelArchitecture.Qwen2Moe, ModelArchitecture.Qwen3Moe, ModelArchitecture.Olmoe })
            {
                data.Add(arch, false);
                data.Add(arch, true);
            }
            return data;
        }
    }

    private static readonly int[] Prompt = [3, 41, 97, 260, 15, 8, 300, 77];

    [Theory]
    [MemberData(nameof(FamiliesAndLayouts))]
    public void Backbone_load_skips_routed_experts_and_keeps_every_other_tensor(ModelArchitecture arch, bool fused)
    {
        string dir = TinyCheckpoints.Get(arch, fused: fused);
        using var all = ModelWeights.Load(dir, WeightPrecision.BF16);
        using var backbone = ModelWeights.Load(dir, WeightPrecision.BF16, set: WeightSet.Backbone);

        Assert.Equal(WeightSet.All, all.WeightSet);
        Assert.Equal(WeightSet.Backbone, backbone.WeightSet);
        TensorBytes.AssertSame(all.Embedding, backbone.Embedding, "embedding");
        TensorBytes.AssertSame(all.FinalNorm, backbone.FinalNorm, "final norm");
        TensorBytes.AssertSame(all.LmHead.Weight, backbone.LmHead.Weight, "lm head");
        long expertBytes = 0;
        for (int l = 0; l < all.Layers.Count; l++)
        {
            var a = all.Layers[l];
            var b = backbone.Layers[l];
            string p = $"layer {l} ";
            Assert.True(a.RoutedExpertsLoaded);
            Assert.False(b.RoutedExpertsLoaded);
            Assert.Empty(b.Experts);
            Assert.Equal(all.Config.IsSparseLayer(l) ? all.Config.NumExperts : 0, a.Experts.Count);
            expertBytes += a.Experts.Sum(e => e.WeightBytes);
            TensorBytes.AssertSame(a.InputNorm, b.InputNorm, p + "input norm");
            TensorBytes.AssertSame(a.PostAttentionNorm, b.PostAttentionNorm, p + "post-attention norm");
            TensorBytes.AssertSame(a.Qkv.Weight, b.Qkv.Weight, p + "qkv");
            TensorBytes.AssertSame(a.Qkv.Bias, b.Qkv.Bias, p + "qkv bias");
            TensorBytes.AssertSame(a.Output.Weight, b.Output.Weight, p + "o_proj");
            TensorBytes.AssertSame(a.Output.Bias, b.Output.Bias, p + "o_proj bias");
            TensorBytes.AssertSame(a.QNorm, b.QNorm, p + "q norm");
            TensorBytes.AssertSame(a.KNorm, b.KNorm, p + "k norm");
            TensorBytes.AssertSame(a.Router, b.Router, p + "router");
            TensorBytes.AssertSame(a.SharedExpert, b.SharedExpert, p + "shared expert");
            TensorBytes.AssertSame(a.SharedExpertGate, b.SharedExpertGate, p + "shared expert gate");
            TensorBytes.AssertSame(a.DenseMlp, b.DenseMlp, p + "dense mlp");
        }
        Assert.True(expertBytes > 0);
        // bf16 checkpoint loaded as bf16: bytes read equal bytes held, so the difference is exactly the experts.
        Assert.Equal(all.BytesRead - expertBytes, backbone.BytesRead);
    }

    [Fact]
    public void Backbone_load_reads_fewer_bytes_from_a_sharded_f32_checkpoint()
    {
        string dir = TinyCheckpoints.Get(ModelArchitecture.Mixtral, dtype: TensorDType.F32, shards: 3);
        using var all = ModelWeights.Load(dir, WeightPrecision.F32);
        using var backbone = ModelWeights.Load(dir, WeightPrecision.F32, set: WeightSet.Backbone);
        long expertBytes = all.Layers.Sum(l => l.Experts.Sum(e => e.WeightBytes));
        Assert.Equal(all.BytesRead - expertBytes, backbone.BytesRead);
        Assert.True(backbone.ParameterCount() < all.ParameterCount());
    }

    [Fact]
    public void Backbone_load_reports_progress_up_to_its_own_tensor_count()
    {
        string dir = TinyCheckpoints.Get(ModelArchitecture.Qwen2Moe);
        var reports = new List<(int Done, int Total)>();
        using var w = ModelWeights.Load(dir, WeightPrecision.BF16, (d, t) => { lock (reports) reports.Add((d, t)); }, WeightSet.Backbone);
        using var ck = Checkpoint.Open(dir);
        int nonExpert = ck.TensorNames.Count(n => !n.Contains(".experts.", StringComparison.Ordinal));
        Assert.All(reports, r => Assert.Equal(nonExpert, r.Total));
        Assert.Equal((nonExpert, nonExpert), reports[^1]);
    }

    [Theory]
    [InlineData(WeightPrecision.F32)]
    [InlineData(WeightPrecision.BF16)]
    public void Backbone_model_refuses_local_expert_work_with_a_clear_error(WeightPrecision precision)
    {
        string dir = TinyCheckpoints.Get(ModelArchitecture.Qwen2Moe);
        using var model = MoeModel.Load(dir, precision, set: WeightSet.Backbone);
        using var seq = model.NewSequence();
        // Prefill (torch path), a one-token decode (native decode path for bf16) and a direct expert call.
        var prefill = Assert.Throws<InvalidOperationException>(() => model.ForwardSequence(seq, Prompt));
        Assert.Contains("layer 0's routed experts are not loaded on this node (backbone-only weights)", prefill.Message);
        using var decodeSeq = model.NewSequence();
        var decode = Assert.Throws<InvalidOperationException>(() => model.ForwardSequence(decodeSeq, [Prompt[0]]));
        Assert.Contains("layer 0's routed experts are not loaded", decode.Message);
        using var rows = torch.zeros(2, model.Config.HiddenSize);
        var run = Assert.Throws<InvalidOperationException>(() => model.RunExpert(0, 1, rows));
        Assert.Contains("layer 0's routed experts", run.Message);
        Assert.Contains("they run on expert nodes", run.Message);
    }

    /// <summary>The gateway's flow: backbone pieces locally, each routed expert loaded on its own (as an expert node
    /// would), combined with the gate weights: the logits equal the monolithic forward of a full load.</summary>
    [Theory]
    [InlineData(ModelArchitecture.Qwen2Moe, false)]
    [InlineData(ModelArchitecture.Mixtral, true)]
    [InlineData(ModelArchitecture.Olmoe, false)]
    public void Backbone_with_separately_loaded_experts_gives_the_full_models_logits(ModelArchitecture arch, bool fused)
    {
        string dir = TinyCheckpoints.Get(arch, fused: fused);
        using var full = MoeModel.Load(dir, WeightPrecision.F32);
        using var fullSeq = full.NewSequence();
        var want = full.ForwardSequence(fullSeq, Prompt);

        using var gateway = MoeModel.Load(dir, WeightPrecision.F32, set: WeightSet.Backbone);
        using var ck = Checkpoint.Open(dir);
        var experts = new Dictionary<(int, int), ExpertFfn>();
        using var seq = gateway.NewSequence();
        var batch = new BatchLayout([new BatchSegment(seq, Prompt)]);
        float[] flat;
        using (torch.no_grad())
        using (var scope = torch.NewDisposeScope())
        {
            var x = gateway.Embed(batch);
            for (int l = 0; l < gateway.Config.NumLayers; l++)
            {
                x = gateway.AttentionBlock(l, x, batch);
                if (!gateway.Weights.Layers[l].IsSparse)
                {
                    x = gateway.MlpBlock(l, x, batch);
                    continue;
                }
                var h = gateway.MlpInput(l, x);
                var routing = gateway.Route(l, h, batch);
                var outputs = routing.Groups.Select(g =>
                {
                    if (!experts.TryGetValue((l, g.Expert), out var ffn))
                        experts[(l, g.Expert)] = ffn = ModelWeights.LoadExpert(gateway.Config, ck, l, g.Expert, WeightPrecision.F32);
                    return ffn.Forward(h.index_select(0, torch.tensor(g.Rows.Select(r => (long)r).ToArray())));
                }).ToList();
                x = gateway.Combine(l, x, h, routing, outputs);
            }
            flat = TorchInterop.ToFloatArray(gateway.Logits(x, null));
        }
        MoeModel.Commit(batch);
        foreach (var e in experts.Values) e.Dispose();
        int v = gateway.Config.VocabSize;
        for (int t = 0; t < Prompt.Length; t++)
            Assert.Equal(want[t], flat.AsSpan(t * v, v).ToArray());
    }
}
