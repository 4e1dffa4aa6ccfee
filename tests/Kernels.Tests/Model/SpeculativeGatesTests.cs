using System.Text.Json;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Generation;
using MoeServer.Kernels.Model;
using MoeServer.Kernels.Residency;
using MoeServer.Kernels.Tests.Support;
using MoeServer.Kernels.Tokenization;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace MoeServer.Kernels.Tests.Model;

/// <summary>
/// Speculative lookahead gates (Pre-gated MoE on a layer-wise checkpoint): later layers' gates applied to the residual
/// stream predict their experts. Checked against an independent float64 application of the formula, against exact
/// routing at distance 0, and for recall on held-out text of the committed trained model; plus the recall arithmetic.
/// </summary>
public sealed class SpeculativeGatesTests(ITestOutputHelper output)
{
    private const string Prompt = "In the beginning God created the heaven and the earth.";
    private const string OtherPrompt = "And the earth was without form, and void; and darkness was upon the face of the deep.";

    /// <summary>
    /// One engine step the way StepRunner runs it: Embed, then per layer AttentionBlock, and BeginMoe / each group's
    /// expert / FinishMoe on sparse layers. <paramref name="atLayer"/> sees the residual after the layer's attention
    /// (what speculation gets) and the layer's exact routing (null on dense layers).
    /// </summary>
    private static void RunStep(MoeModel model, BatchLayout batch, Action<int, Tensor, MoeLayerWork?> atLayer)
    {
        using var scope = torch.NewDisposeScope();
        int H = model.Config.HiddenSize;
        var x = model.Embed(batch);
        for (int l = 0; l < model.Config.NumLayers; l++)
        {
            x = model.AttentionBlock(l, x, batch);
            if (!model.Weights.Layers[l].IsSparse)
            {
                atLayer(l, x, null);
                x = model.MlpBlock(l, x, batch);
                continue;
            }
            using var work = model.BeginMoe(l, x, batch);
            atLayer(l, x, work);
            var outputs = new List<float[]>();
            for (int g = 0; g < work.Routing.Groups.Count; g++)
            {
                var group = work.Routing.Groups[g];
                using var rows = torch.tensor(work.GroupInput(g), [group.Rows.Length, H]);
                using var y = model.RunExpert(l, group.Expert, rows);
                outputs.Add(TorchInterop.ToFloatArray(y));
            }
            x = model.FinishMoe(work, x, outputs);
        }
        MoeModel.Commit(batch);
    }

    /// <summary>The speculation formula written out in float64 from the model's gate and norm weights.</summary>
    private sealed class Float64Gates
    {
        private readonly double[]?[] _gates;
        private readonly double[][] _norms;
        private readonly ModelConfig _cfg;

        public Float64Gates(MoeModel model)
        {
            _cfg = model.Config;
            _gates = model.Weights.Layers.Select(w => w.Router is null ? null : ToDouble(w.Router)).ToArray();
            _norms = model.Weights.Layers.Select(w => ToDouble(w.PostAttentionNorm)).ToArray();
        }

        private static double[] ToDouble(Tensor t) => TorchInterop.ToFloatArray(t).Select(v => (double)v).ToArray();

        /// <summary>Top-k of softmax(RMSNorm(x, norm[layer]) · gate[layer]) over the enabled experts.</summary>
        public int[] Predict(int layer, ReadOnlySpan<float> x, RoutingOverride ov)
        {
            int H = _cfg.HiddenSize, E = _cfg.NumExperts;
            var gate = _gates[layer]!;
            double ms = 0;
            foreach (float v in x) ms += (double)v * v;
            double inv = 1 / Math.Sqrt(ms / H + _cfg.RmsNormEps);
            var h = new double[H];
            for (int i = 0; i < H; i++) h[i] = x[i] * inv * _norms[layer][i];
            var logits = new double[E];
            for (int e = 0; e < E; e++)
                for (int i = 0; i < H; i++) logits[e] += h[i] * gate[e * H + i];
            double max = logits.Max();
            var p = logits.Select(z => Math.Exp(z - max)).ToArray();
            double sum = p.Sum();
            int k = Math.Min(ov.TopKExperts ?? _cfg.NumExpertsPerToken, E);
            return Enumerable.Range(0, E).Where(e => !ov.IsDisabled(layer, e))
                .OrderByDescending(e => p[e] / sum).ThenBy(e => e).Take(k).ToArray();
        }
    }

    private static void AssertSameSet(int[] want, int[] got, string what) =>
        Assert.True(want.Order().SequenceEqual(got.Order()), $"{what}: want {{{string.Join(",", want.Order())}}}, got {{{string.Join(",", got.Order())}}}");

    private static BatchLayout Batch(params BatchSegment[] segments) => new(segments);

    /// <summary>Two sequences, the second with its own top-k and some experts off in every layer.</summary>
    private static RoutingOverride SomeOverride(int layers) =>
        new(TopKExperts: 3, DisabledExperts: Enumerable.Range(0, layers).SelectMany(l => new[] { (l, l % 8), (l, (l + 3) % 8) }).ToHashSet());

    [Fact]
    public void Prediction_matches_a_float64_gate_application_on_the_residual()
    {
        string dir = TrainedModels.Dir("mixtral-moe");
        var tok = HfTokenizer.Load(dir);
        using var model = MoeModel.Load(dir, WeightPrecision.F32);
        var f64 = new Float64Gates(model);
        int L = model.Config.NumLayers;
        using var a = model.NewSequence();
        using var b = model.NewSequence();
        var ovB = SomeOverride(L);
        var steps = new List<BatchLayout>
        {
            Batch(new(a, tok.Encode(Prompt, parseSpecialTokens: false)), new(b, tok.Encode(OtherPrompt, parseSpecialTokens: false), ovB)),
        };
        for (int i = 0; i < 3; i++) steps.Add(Batch(new(a, [100 + i]), new(b, [200 + i], ovB)));

        int compared = 0;
        foreach (var batch in steps)
        {
            RunStep(model, batch, (l, x, _) =>
            {
                var rows = TorchInterop.ToFloatArray(x);
                int H = model.Config.HiddenSize;
                var spec = model.SpeculateExperts(l, x, batch, horizon: L);
                Assert.Equal(l, spec.FromLayer);
                Assert.Equal(Enumerable.Range(l + 1, L - l - 1), spec.Layers.Select(p => p.Layer));
                foreach (var p in spec.Layers)
                {
                    Assert.Equal(p.Layer - l, p.Distance);
                    for (int t = 0; t < batch.TotalTokens; t++)
                    {
                        var ov = batch.Segments[batch.SegmentOfRow[t]].RoutingOrDefault;
                        AssertSameSet(f64.Predict(p.Layer, rows.AsSpan(t * H, H), ov), p.ExpertsOfToken[t], $"layer {l} -> {p.Layer}, row {t}");
                        Assert.Equal(ov.TopKExperts ?? 2, p.ExpertsOfToken[t].Length);
                        compared++;
                    }
                    Assert.Equal(p.ExpertsOfToken.SelectMany(e => e).Distinct().Order(), p.NeededExperts);
                }
            });
        }
        Assert.True(compared > 100, $"only {compared} predictions compared");
    }

    [Fact]
    public void Token_gate_prediction_applies_every_layers_gate_to_the_new_tokens_embedding()
    {
        string dir = TrainedModels.Dir("mixtral-moe");
        using var model = MoeModel.Load(dir, WeightPrecision.F32);
        var f64 = new Float64Gates(model);
        int H = model.Config.HiddenSize, L = model.Config.NumLayers;
        using var a = model.NewSequence();
        using var b = model.NewSequence();
        var ovB = SomeOverride(L);
        var batch = Batch(new(a, [17]), new(b, [2041], ovB));
        var spec = model.SpeculateFromEmbeddings(batch);
        Assert.Equal(Enumerable.Range(0, L), spec.Layers.Select(p => p.Layer));
        var emb = TorchInterop.ToFloatArray(model.Weights.Embedding.to(ScalarType.Float32));
        foreach (var p in spec.Layers)
            for (int t = 0; t < 2; t++)
                AssertSameSet(f64.Predict(p.Layer, emb.AsSpan(batch.TokenIds[t] * H, H), batch.Segments[t].RoutingOrDefault), p.ExpertsOfToken[t], $"layer {p.Layer}, row {t}");
        Assert.Equal(0, a.Length); // nothing was appended
    }

    [Fact]
    public void Distance_zero_prediction_equals_exact_routing()
    {
        string dir = TrainedModels.Dir("mixtral-moe");
        var tok = HfTokenizer.Load(dir);
        using var model = MoeModel.Load(dir, WeightPrecision.F32);
        using var a = model.NewSequence();
        using var b = model.NewSequence();
        var ovB = SomeOverride(model.Config.NumLayers);
        var steps = new List<BatchLayout>
        {
            // Prefill gates through torch, decode through the native dot products: both are checked.
            Batch(new(a, tok.Encode(Prompt, parseSpecialTokens: false)), new(b, tok.Encode(OtherPrompt, parseSpecialTokens: false), ovB)),
        };
        for (int i = 0; i < 3; i++) steps.Add(Batch(new(a, [300 + i]), new(b, [400 + i], ovB)));

        foreach (var batch in steps)
        {
            RunStep(model, batch, (l, x, work) =>
            {
                var own = Assert.Single(model.Speculate(l, x, batch, 0, 0).Layers);
                Assert.Equal((l, 0), (own.Layer, own.Distance));
                for (int t = 0; t < batch.TotalTokens; t++)
                    AssertSameSet(work!.Routing.ExpertsOfToken[t], own.ExpertsOfToken[t], $"layer {l}, row {t}");
            });
        }
    }

    [Fact]
    public void Recall_on_held_out_text_is_well_above_chance_at_distance_one()
    {
        string dir = TrainedModels.Dir("mixtral-moe");
        using var card = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "model-card.json")));
        string heldOut = TrainedModels.CorpusFile(card.RootElement.GetProperty("held_out_file").GetString()!);
        var tokens = PerplexityEvaluator.LineDocuments(HfTokenizer.Load(dir), heldOut);
        using var model = MoeModel.Load(dir, WeightPrecision.BF16); // as served (gates stay fp32)
        int L = model.Config.NumLayers, E = model.Config.NumExperts, K = model.Config.NumExpertsPerToken;

        // Four concurrent sequences decoding held-out text token by token (teacher forced): batches of four rows,
        // so set recall is a decode step's prefetch, not a prefill's near-everything.
        const int Sequences = 4, Steps = 128;
        var seqs = Enumerable.Range(0, Sequences).Select(_ => model.NewSequence()).ToArray();
        var recall = new SpeculationRecall();
        try
        {
            for (int step = 0; step < Steps; step++)
            {
                var batch = new BatchLayout(seqs.Select((s, i) => new BatchSegment(s, [tokens[i * Steps + step]])).ToArray());
                var made = new List<SpeculativeRouting>();
                RunStep(model, batch, (l, x, work) =>
                {
                    foreach (var spec in made) recall.Record(spec, work!.Routing);
                    Assert.True(recall.Record(model.Speculate(l, x, batch, 0, 0), work!.Routing));
                    made.Add(model.SpeculateExperts(l, x, batch, horizon: L - 1));
                });
            }
        }
        finally
        {
            foreach (var s in seqs) s.Dispose();
        }

        var stats = recall.Snapshot();
        output.WriteLine($"mixtral-moe, {Sequences} sequences x {Steps} held-out tokens, batches of {Sequences}; chance token recall k/E = {(double)K / E:F3}");
        foreach (var s in stats)
            output.WriteLine($"distance {s.Distance}: token recall {s.TokenRecall:F3} ({s.TokenHits}/{s.TokenActual} over {s.Rows} rows), "
                + $"set recall {s.SetRecall:F3} (a random set of the same size: {(double)s.SetPredicted / s.Steps / E:F3}), "
                + $"set precision {s.SetPrecision:F3} over {s.Steps} layer-steps");

        Assert.Equal(Enumerable.Range(0, L), stats.Select(s => s.Distance));
        Assert.Equal(1.0, stats[0].TokenRecall);
        Assert.Equal(Sequences * Steps * (L - 1), stats[1].Rows);
        double chance = (double)K / E;
        Assert.True(stats[1].TokenRecall > chance + 0.15,
            $"distance-1 token recall {stats[1].TokenRecall:F3} is not clearly above chance {chance:F3}");
    }

    [Fact]
    public void Router_decoupled_model_is_refused_with_a_clear_error()
    {
        string dir = TrainedModels.Dir("readme-moe");
        using var model = MoeModel.Load(dir, WeightPrecision.BF16);
        using var seq = model.NewSequence();
        var batch = Batch(new BatchSegment(seq, HfTokenizer.Load(dir).Encode(Prompt, parseSpecialTokens: false)));
        using var scope = torch.NewDisposeScope();
        var x = model.AttentionBlock(0, model.Embed(batch), batch);
        var e = Assert.Throws<InvalidOperationException>(() => model.SpeculateExperts(0, x, batch, horizon: 1));
        Assert.Contains("router-decoupled", e.Message);
        Assert.Contains("exactly", e.Message);
    }

    [Fact]
    public void Disabled_experts_are_never_predicted()
    {
        string dir = TrainedModels.Dir("mixtral-moe");
        var prompt = HfTokenizer.Load(dir).Encode(Prompt, parseSpecialTokens: false);
        using var model = MoeModel.Load(dir, WeightPrecision.F32);
        int L = model.Config.NumLayers, E = model.Config.NumExperts;
        // Six of eight experts off in every layer (a different six each): with top-2 the prediction has no choice left.
        var enabled = Enumerable.Range(0, L).Select(l => new[] { l % E, (l + 5) % E }).ToArray();
        var off = new RoutingOverride(DisabledExperts: Enumerable.Range(0, L)
            .SelectMany(l => Enumerable.Range(0, E).Where(e => !enabled[l].Contains(e)).Select(e => (l, e))).ToHashSet());
        using var free = model.NewSequence();
        using var steered = model.NewSequence();
        var batch = Batch(new(free, prompt), new(steered, prompt, off));
        int freeRowsUsingDisabled = 0;
        RunStep(model, batch, (l, x, _) =>
        {
            foreach (var p in model.SpeculateExperts(l, x, batch, horizon: L).Layers)
            {
                for (int t = 0; t < batch.TotalTokens; t++)
                {
                    var experts = p.ExpertsOfToken[t];
                    if (batch.SegmentOfRow[t] == 0)
                    {
                        if (experts.Any(e => off.IsDisabled(p.Layer, e))) freeRowsUsingDisabled++;
                        continue;
                    }
                    Assert.DoesNotContain(experts, e => off.IsDisabled(p.Layer, e));
                    AssertSameSet(enabled[p.Layer], experts, $"layer {l} -> {p.Layer}, row {t}");
                }
            }
        });
        // The same tokens without the override do predict those experts: the override had something to remove.
        Assert.True(freeRowsUsingDisabled > 0);
    }

    [Fact]
    public void Dense_layers_and_layers_past_the_last_are_left_out_of_the_horizon()
    {
        // Layers 0, 2, 3 sparse; 1 dense.
        string dir = TinyCheckpoints.Get(ModelArchitecture.Qwen2Moe, variant: "4layers-dense1",
            edit: c => c with { NumLayers = 4, MlpOnlyLayers = [1] });
        using var model = MoeModel.Load(dir, WeightPrecision.F32);
        var f64 = new Float64Gates(model);
        using var seq = model.NewSequence();
        var batch = Batch(new BatchSegment(seq, [5, 17, 42, 99, 7]));
        int H = model.Config.HiddenSize;
        RunStep(model, batch, (l, x, _) =>
        {
            if (l != 0) return;
            Assert.Empty(model.SpeculateExperts(0, x, batch, horizon: 0).Layers);
            Assert.Empty(model.SpeculateExperts(0, x, batch, horizon: 1).Layers);
            var spec = model.SpeculateExperts(0, x, batch, horizon: 10);
            Assert.Equal([(2, 2), (3, 3)], spec.Layers.Select(p => (p.Layer, p.Distance)));
            Assert.Equal(spec.Layers.SelectMany(p => p.NeededExperts.Select(e => new ExpertId(p.Layer, e))), spec.NeededExperts());
            Assert.Null(spec.ForLayer(1));
            // The dense layer's zero block between the gates does not shift the later layers' columns.
            var rows = TorchInterop.ToFloatArray(x);
            foreach (var p in spec.Layers)
                for (int t = 0; t < batch.TotalTokens; t++)
                    AssertSameSet(f64.Predict(p.Layer, rows.AsSpan(t * H, H), RoutingOverride.None), p.ExpertsOfToken[t], $"layer {p.Layer}, row {t}");
        });
    }

    // ---------------------------------------------------------------- SpeculationRecall arithmetic

    [Fact]
    public void Recall_counts_token_hits_and_averages_set_recall_per_step()
    {
        var r = new SpeculationRecall();
        r.Record(1, [0, 1], [1, 2]);     // 1 of 2
        r.Record(1, [3, 4], [4, 3]);     // 2 of 2, order does not matter
        r.Record(2, [5, 6], [0, 1]);     // 0 of 2
        r.RecordSet(1, [0, 1, 3, 4], [1, 2, 3, 4]); // 3 of 4
        r.RecordSet(1, [0], [0, 5]);                // 1 of 2
        r.RecordSet(2, [1, 2], []);                 // nothing to recall: not a step

        var s = r.Snapshot();
        Assert.Equal([1, 2], s.Select(x => x.Distance));
        var d1 = s[0];
        Assert.Equal((2L, 3L, 4L), (d1.Rows, d1.TokenHits, d1.TokenActual));
        Assert.Equal(0.75, d1.TokenRecall, 12);
        Assert.Equal(2, d1.Steps);
        Assert.Equal((0.75 + 0.5) / 2, d1.SetRecall, 12);
        Assert.Equal((4L, 6L, 5L), (d1.SetHits, d1.SetActual, d1.SetPredicted));
        Assert.Equal(0.8, d1.SetPrecision, 12);
        var d2 = s[1];
        Assert.Equal((1L, 0L, 2L, 0L), (d2.Rows, d2.TokenHits, d2.TokenActual, d2.Steps));
        Assert.Equal(0, d2.TokenRecall);
        Assert.Equal(0, d2.SetRecall);
    }

    [Fact]
    public void Recall_scores_a_speculation_against_the_layer_routing_it_predicted()
    {
        var spec = new SpeculativeRouting(0, [new SpeculatedLayer(2, 2, [[0, 1], [2, 3]])]);
        var actual = new ExpertRouting(2, [[1, 0], [2, 4]], [[0.5f, 0.5f], [0.5f, 0.5f]], numExperts: 8);
        var r = new SpeculationRecall();

        Assert.True(r.Record(spec, actual));
        Assert.False(r.Record(spec, new ExpertRouting(1, [[0, 1], [2, 3]], [[1, 0], [1, 0]], 8)));
        Assert.Throws<ArgumentException>(() => r.Record(spec, new ExpertRouting(2, [[0, 1]], [[1, 0]], 8)));

        var s = Assert.Single(r.Snapshot());
        Assert.Equal(2, s.Distance);
        Assert.Equal((2L, 3L, 4L), (s.Rows, s.TokenHits, s.TokenActual));
        // Predicted {0,1,2,3}, used {0,1,2,4}.
        Assert.Equal((1L, 3L, 4L, 4L), (s.Steps, s.SetHits, s.SetActual, s.SetPredicted));
        Assert.Equal(0.75, s.SetRecall, 12);
    }

    [Fact]
    public void Recall_is_safe_to_record_from_many_threads()
    {
        var r = new SpeculationRecall();
        Parallel.For(0, 4000, i =>
        {
            r.Record(1 + i % 2, [0, 1], [1, 2]);
            r.RecordSet(1 + i % 2, [0, 1], [1, 2]);
        });
        foreach (var s in r.Snapshot())
        {
            Assert.Equal((2000L, 2000L, 4000L, 2000L), (s.Rows, s.TokenHits, s.TokenActual, s.Steps));
            Assert.Equal(0.5, s.SetRecall, 9);
        }
    }
}
