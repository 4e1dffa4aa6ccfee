using MoeServer.Kernels.Config;
using MoeServer.Kernels.Formats;
using MoeServer.Kernels.Model;
using MoeServer.Kernels.Tests.Reference;
using MoeServer.Kernels.Tests.Support;
using static MoeServer.Kernels.Tests.Support.ParityAssert;

namespace MoeServer.Kernels.Tests.Model;

/// <summary>
/// <c>readme_moe</c> on TorchSharp against the independent float64 reference (ReferenceRouterDecoupledModel, written
/// separately from ROUTER_DECOUPLED_SPEC.md): logits and every layer's routing, prefill and decode, batched sequences,
/// per-request overrides, fp32 and bf16.
/// </summary>
public sealed class RouterDecoupledParityTests : IDisposable
{
    private const double Fp32Tolerance = 1e-4;
    private const double Bf16Tolerance = 2e-2;
    private static readonly int[] Prompt = [5, 17, 3, 40, 22, 9, 61, 12, 33, 7, 50, 28];
    private readonly Support.TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private string Checkpoint(Action<Dictionary<string, object?>>? tweak = null, string dtype = "F32", int seed = 1)
    {
        string dir = Path.Combine(_dir.Path, $"readme-{seed}-{dtype}-{Guid.NewGuid():N}"[..40]);
        Directory.CreateDirectory(dir);
        return RouterDecoupledTinyModel.Create(seed, tweak).WriteTo(dir, dtype: dtype);
    }

    [Theory]
    [InlineData(WeightPrecision.F32, "F32")]
    [InlineData(WeightPrecision.BF16, "BF16")]
    public void Prefill_logits_and_routing_match_the_reference(WeightPrecision precision, string dtype)
    {
        string dir = Checkpoint(dtype: dtype);
        var reference = ReferenceRouterDecoupledModel.Load(dir);
        using var model = MoeModel.Load(dir, precision);
        Assert.Equal(ModelArchitecture.RouterDecoupled, model.Config.Architecture);
        var seen = new List<ExpertRouting>();
        model.RoutingObserver = seen.Add;
        using var seq = model.NewSequence();
        var got = model.ForwardSequence(seq, Prompt);
        var want = reference.Forward(reference.NewSequence(), Prompt);
        AssertClose(got, want, precision == WeightPrecision.F32 ? Fp32Tolerance : Bf16Tolerance, $"{dtype} prefill");
        AssertSameRouting(seen, reference.LastRouting[..model.Config.NumLayers], $"{dtype} prefill");
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Decode_token_by_token_matches_the_reference_on_both_decode_paths(bool nativeDecode)
    {
        string dir = Checkpoint(dtype: "BF16");
        var reference = ReferenceRouterDecoupledModel.Load(dir);
        var saved = MoeModel.UseNativeDecodePath;
        MoeModel.UseNativeDecodePath = nativeDecode;
        try
        {
            using var model = MoeModel.Load(dir, WeightPrecision.BF16);
            using var seq = model.NewSequence(4); // grows while decoding
            var rseq = reference.NewSequence();
            AssertClose(model.ForwardSequence(seq, Prompt[..4]), reference.Forward(rseq, Prompt[..4]), Bf16Tolerance, "prefill");
            foreach (int token in Prompt[4..])
            {
                var seen = new List<ExpertRouting>();
                model.RoutingObserver = seen.Add;
                AssertClose(model.ForwardSequence(seq, [token]), reference.Forward(rseq, [token]), Bf16Tolerance, $"decode of {token}");
                AssertSameRouting(seen, reference.LastRouting[..model.Config.NumLayers], $"decode of {token}");
            }
            Assert.Equal(Prompt.Length, seq.Length);
            Assert.Equal(Prompt.Length, seq.Router!.Length);
        }
        finally
        {
            MoeModel.UseNativeDecodePath = saved;
        }
    }

    [Fact]
    public void A_batch_of_sequences_at_different_positions_matches_each_sequence_alone()
    {
        string dir = Checkpoint();
        var reference = ReferenceRouterDecoupledModel.Load(dir);
        using var model = MoeModel.Load(dir, WeightPrecision.F32);
        using var a = model.NewSequence();
        using var b = model.NewSequence();
        var ra = reference.NewSequence();
        var rb = reference.NewSequence();
        model.ForwardSequence(a, Prompt[..7]);
        reference.Forward(ra, Prompt[..7]);
        // One step: a decodes one token while b prefills five.
        var batch = new BatchLayout([new BatchSegment(a, [Prompt[7]]), new BatchSegment(b, Prompt[..5])]);
        using var logits = model.Forward(batch, LogitRows.All);
        var flat = TorchInterop.ToFloatArray(logits);
        int v = model.Config.VocabSize;
        var rows = Enumerable.Range(0, 6).Select(i => flat.AsSpan(i * v, v).ToArray()).ToArray();
        AssertClose(rows[..1], reference.Forward(ra, [Prompt[7]]), Fp32Tolerance, "decoding sequence");
        AssertClose(rows[1..], reference.Forward(rb, Prompt[..5]), Fp32Tolerance, "prefilling sequence");
    }

    [Theory]
    [InlineData(1, false)]
    [InlineData(3, true)]
    public void Routing_overrides_match_the_reference(int topK, bool disableSome)
    {
        string dir = Checkpoint(c => c["norm_topk_prob"] = true);
        var reference = ReferenceRouterDecoupledModel.Load(dir);
        using var model = MoeModel.Load(dir, WeightPrecision.F32);
        var disabled = disableSome ? new HashSet<(int, int)> { (0, 1), (1, 2), (1, 0) } : null;
        var routing = new RoutingOverride(topK, disabled);
        Assert.Empty(routing.GetValidationErrors(model.Config));
        var seen = new List<ExpertRouting>();
        model.RoutingObserver = seen.Add;
        using var seq = model.NewSequence();
        var got = model.ForwardSequence(seq, Prompt, routing);
        var want = reference.Forward(reference.NewSequence(), Prompt, topK, disabled);
        AssertClose(got, want, Fp32Tolerance, $"top-k {topK}, disabled {disableSome}");
        AssertSameRouting(seen, reference.LastRouting[..model.Config.NumLayers], "overrides");
        foreach (var r in seen)
        {
            int allowed = model.Config.NumExperts - (disabled?.Count(d => d.Item1 == r.Layer) ?? 0);
            Assert.All(r.ExpertsOfToken, e => Assert.Equal(Math.Min(topK, allowed), e.Length));
        }
    }

    [Fact]
    public void Without_a_shared_expert_and_with_tied_embeddings_it_still_matches()
    {
        string dir = Checkpoint(c =>
        {
            c["shared_expert_intermediate_size"] = 0;
            c["tie_word_embeddings"] = true;
            c["num_experts_per_tok"] = 1;
        }, seed: 4);
        var reference = ReferenceRouterDecoupledModel.Load(dir);
        using var model = MoeModel.Load(dir, WeightPrecision.F32);
        using var seq = model.NewSequence();
        AssertClose(model.ForwardSequence(seq, Prompt), reference.Forward(reference.NewSequence(), Prompt), Fp32Tolerance, "S=0, tied, k=1");
    }

    [Fact]
    public void The_engine_pieces_with_experts_run_apart_give_the_same_logits_as_forward()
    {
        string dir = Checkpoint();
        using var full = MoeModel.Load(dir, WeightPrecision.F32);
        using var backbone = MoeModel.Load(dir, WeightPrecision.F32, set: WeightSet.Backbone);
        using var s1 = full.NewSequence();
        using var s2 = backbone.NewSequence();
        var want = full.ForwardSequence(s1, Prompt);

        var batch = new BatchLayout([new BatchSegment(s2, Prompt)]);
        using var x0 = backbone.Embed(batch);
        var x = x0.alias();
        for (int l = 0; l < backbone.Config.NumLayers; l++)
        {
            var attn = backbone.AttentionBlock(l, x, batch);
            x.Dispose();
            using var work = backbone.BeginMoe(l, attn, batch);
            var outputs = work.Routing.Groups.Select((g, i) =>
            {
                using var rows = TorchSharp.torch.tensor(work.GroupInput(i), [g.Rows.Length, work.Width]);
                using var y = full.RunExpert(l, g.Expert, rows);
                return TorchInterop.ToFloatArray(y);
            }).ToArray();
            x = backbone.FinishMoe(work, attn, outputs);
            attn.Dispose();
        }
        using var logits = backbone.Logits(x, null);
        x.Dispose();
        var flat = TorchInterop.ToFloatArray(logits);
        int v = full.Config.VocabSize;
        var got = Enumerable.Range(0, Prompt.Length).Select(i => flat.AsSpan(i * v, v).ToArray()).ToArray();
        AssertClose(got, want.Select(r => r.Select(f => (double)f).ToArray()).ToArray(), 1e-5, "engine pieces");
    }

    [Fact]
    public void A_generated_checkpoint_follows_the_spec_the_reference_reads()
    {
        // make-checkpoint's writer and the reference's reader were written apart: names, shapes and config agree.
        string dir = TinyCheckpoints.Get(ModelArchitecture.RouterDecoupled, dtype: TensorDType.F32);
        var reference = ReferenceRouterDecoupledModel.Load(dir);
        Assert.Empty(reference.UnusedTensorNames);
        using var model = MoeModel.Load(dir, WeightPrecision.F32);
        int[] prompt = [3, 41, 97, 260, 15, 8, 300, 77];
        using var seq = model.NewSequence();
        AssertClose(model.ForwardSequence(seq, prompt), reference.Forward(reference.NewSequence(), prompt), Fp32Tolerance, "generated checkpoint");
    }

    [Fact]
    public void A_missing_router_tensor_is_an_error_naming_it_and_the_file()
    {
        var tiny = RouterDecoupledTinyModel.Create(1);
        string dir = Path.Combine(_dir.Path, "broken");
        Directory.CreateDirectory(dir);
        tiny.WriteTo(dir, tiny.Tensors.Where(t => t.Name != "router.layers.1.mlp.up_proj.weight").ToList());
        var e = Assert.ThrowsAny<Exception>(() => MoeModel.Load(dir, WeightPrecision.F32));
        Assert.Contains("router.layers.1.mlp.up_proj.weight", e.Message, StringComparison.Ordinal);
        Assert.IsType<CheckpointFormatException>(e);
    }
}
