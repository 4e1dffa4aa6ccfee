using System.Text.Json;

namespace MoeServer.Kernels.Tests.Reference;

/// <summary>Self-tests of the float64 oracle: hand-computed values and invariants that would catch a wrong formula.</summary>
public class ReferenceModelSelfTests
{
    public static TheoryData<string> Families => new() { "mixtral", "qwen2_moe", "qwen3_moe", "olmoe" };

    private static readonly int[] Prompt = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3];

    private static double Sigma(double z) => 1 / (1 + Math.Exp(-z));

    private static void AssertLogitsEqual(double[][] expected, double[][] actual, double tol)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
        {
            Assert.Equal(expected[i].Length, actual[i].Length);
            for (int j = 0; j < expected[i].Length; j++)
                Assert.True(Math.Abs(expected[i][j] - actual[i][j]) <= tol,
                    $"token {i} logit {j}: {expected[i][j]:R} vs {actual[i][j]:R}");
        }
    }

    private static double[][] Run(string dir, IReadOnlyList<int> tokens)
    {
        var model = ReferenceModel.Load(dir);
        return model.Forward(model.NewSequence(), tokens);
    }

    // ------------------------------------------------------------ math helpers

    [Fact]
    public void Rope_at_position_zero_is_identity()
    {
        double[] v = [0.3, -1.2, 2.5, 0.7, -0.1, 4.0];
        double[] copy = (double[])v.Clone();
        ReferenceModel.ApplyRope(v, 0, 10000);
        Assert.Equal(copy, v);
    }

    [Fact]
    public void Rope_rotates_pairs_by_position_times_frequency_and_preserves_norm()
    {
        // hd = 2: the single pair (x0, x1) rotates by exactly p radians (frequency theta^0 = 1).
        double[] v = [1.0, 0.0];
        ReferenceModel.ApplyRope(v, 3, 10000);
        Assert.Equal(Math.Cos(3), v[0], 15);
        Assert.Equal(Math.Sin(3), v[1], 15);

        // hd = 4, theta = 100: pair (0,2) angle p, pair (1,3) angle p * 100^(-1/2) = p / 10.
        double[] w = [1.0, 2.0, 3.0, 4.0];
        ReferenceModel.ApplyRope(w, 5, 100);
        Assert.Equal(1 * Math.Cos(5) - 3 * Math.Sin(5), w[0], 14);
        Assert.Equal(3 * Math.Cos(5) + 1 * Math.Sin(5), w[2], 14);
        Assert.Equal(2 * Math.Cos(0.5) - 4 * Math.Sin(0.5), w[1], 14);
        Assert.Equal(4 * Math.Cos(0.5) + 2 * Math.Sin(0.5), w[3], 14);

        var rng = new Random(7);
        double[] r = Enumerable.Range(0, 16).Select(_ => rng.NextDouble() - 0.5).ToArray();
        double norm = Math.Sqrt(r.Sum(x => x * x));
        foreach (int p in new[] { 1, 17, 1000, 123456 })
        {
            double[] rot = (double[])r.Clone();
            ReferenceModel.ApplyRope(rot, p, 10000);
            Assert.Equal(norm, Math.Sqrt(rot.Sum(x => x * x)), 12);
            Assert.NotEqual(r, rot);
        }
    }

    [Fact]
    public void RmsNorm_matches_hand_computed_vectors()
    {
        // mean((3,-4,0,0)^2) = 25/4; eps 2.75 -> sqrt(9) = 3.
        double[] y = ReferenceModel.RmsNorm([3, -4, 0, 0], [1, 1, 2, 0.5], 2.75);
        Assert.Equal(new[] { 1.0, -4.0 / 3, 0, 0 }, y);
        // eps 0: rms = 2.5.
        y = ReferenceModel.RmsNorm([3, -4, 0, 0], [2, 0.5, 1, 1], 0);
        Assert.Equal(2.4, y[0], 15);
        Assert.Equal(-0.8, y[1], 15);
        // constant vector 2 -> weight itself.
        Assert.Equal(new[] { 0.5, 1, 1.5, 2 }, ReferenceModel.RmsNorm([2, 2, 2, 2], [0.5, 1, 1.5, 2], 0));
    }

    [Fact]
    public void TopTwoMargin_and_Argmax()
    {
        Assert.Equal(1.5, ReferenceModel.TopTwoMargin([0.5, 3.0, -2, 1.5]));
        Assert.Equal(0.0, ReferenceModel.TopTwoMargin([2.0, 1, 2.0]));
        Assert.Equal(4.0, ReferenceModel.TopTwoMargin([-5.0, -1.0]));
        Assert.Equal(1, ReferenceModel.Argmax([0.5, 3.0, -2, 3.0]));
        Assert.Throws<ArgumentException>(() => ReferenceModel.TopTwoMargin([1.0]));
    }

    // ------------------------------------------------------------ dtype decoding

    [Fact]
    public void F16_known_bit_patterns_decode()
    {
        Assert.Equal(1.0, ReferenceSafetensors.DecodeF16(0x3C00));
        Assert.Equal(-2.0, ReferenceSafetensors.DecodeF16(0xC000));
        Assert.Equal(0.333251953125, ReferenceSafetensors.DecodeF16(0x3555));
        Assert.Equal(65504.0, ReferenceSafetensors.DecodeF16(0x7BFF));
        Assert.Equal(Math.Pow(2, -14), ReferenceSafetensors.DecodeF16(0x0400)); // smallest normal
        Assert.Equal(Math.Pow(2, -24), ReferenceSafetensors.DecodeF16(0x0001)); // smallest subnormal
        Assert.Equal(1023 * Math.Pow(2, -24), ReferenceSafetensors.DecodeF16(0x03FF));
        Assert.Equal(0.0, ReferenceSafetensors.DecodeF16(0x0000));
        Assert.True(double.IsNegative(ReferenceSafetensors.DecodeF16(0x8000)));
        Assert.Equal(double.PositiveInfinity, ReferenceSafetensors.DecodeF16(0x7C00));
        Assert.Equal(double.NegativeInfinity, ReferenceSafetensors.DecodeF16(0xFC00));
        Assert.True(double.IsNaN(ReferenceSafetensors.DecodeF16(0x7E00)));

        // Exhaustive cross-check against the BCL's Half (independent implementation).
        for (int bits = 0; bits < 65536; bits++)
        {
            double expected = (double)BitConverter.UInt16BitsToHalf((ushort)bits);
            double actual = ReferenceSafetensors.DecodeF16((ushort)bits);
            Assert.True(expected.Equals(actual), $"0x{bits:X4}: {expected} vs {actual}");
        }
    }

    [Fact]
    public void BF16_known_bit_patterns_decode()
    {
        Assert.Equal(1.0, ReferenceSafetensors.DecodeBF16(0x3F80));
        Assert.Equal(-3.0, ReferenceSafetensors.DecodeBF16(0xC040));
        Assert.Equal(0.1005859375, ReferenceSafetensors.DecodeBF16(0x3DCE));
        Assert.Equal(Math.Pow(2, -133), ReferenceSafetensors.DecodeBF16(0x0001));
        Assert.Equal(double.PositiveInfinity, ReferenceSafetensors.DecodeBF16(0x7F80));
        Assert.True(double.IsNaN(ReferenceSafetensors.DecodeBF16(0x7FC0)));
        Assert.Equal(3.3895313892515355e38, ReferenceSafetensors.DecodeBF16(0x7F7F));
    }

    [Fact]
    public void Safetensors_reader_decodes_each_dtype_and_rejects_bad_offsets()
    {
        using var tmp = new TempDir();
        double[] data = [1.0, -2.5, 0.1005859375, 65504];
        foreach (string dtype in new[] { "F64", "F32", "BF16", "F16" })
        {
            string path = Path.Combine(tmp.Path, dtype + ".safetensors");
            TestSafetensorsWriter.Write(path, [new TestTensor("a.b", [2, 2], data), new TestTensor("c", [1], [7.0])], dtype);
            var st = ReferenceSafetensors.OpenFile(path);
            Assert.Equal(2, st.Count);
            Assert.Equal(dtype, st.DTypeOf("a.b"));
            var t = st["a.b"];
            Assert.Equal(new[] { 2, 2 }, t.Shape);
            double[] expected = dtype == "BF16" ? [1.0, -2.5, 0.1005859375, 65536] : data; // 65504 rounds up in bf16
            Assert.Equal(expected, t.Data);
            Assert.Equal(new[] { 7.0 }, st["c"].Data);
        }

        // A header claiming more bytes than the dtype/shape need must be rejected.
        string bad = Path.Combine(tmp.Path, "bad.safetensors");
        byte[] header = System.Text.Encoding.UTF8.GetBytes("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,12]}}");
        using (var fs = File.Create(bad))
        {
            fs.Write(BitConverter.GetBytes((ulong)header.Length));
            fs.Write(header);
            fs.Write(new byte[12]);
        }
        Assert.Throws<InvalidDataException>(() => ReferenceSafetensors.OpenFile(bad));
    }

    // ------------------------------------------------------------ config

    [Fact]
    public void Config_parses_fields_and_defaults()
    {
        var c = ReferenceConfig.Parse("""
            {"model_type":"qwen3_moe","hidden_size":16,"num_hidden_layers":4,"num_attention_heads":4,
             "vocab_size":100,"num_experts":8,"num_experts_per_tok":2,"moe_intermediate_size":6,"intermediate_size":12,
             "eos_token_id":[5,7],"rope_parameters":{"rope_type":"default","rope_theta":1000000.0},
             "sliding_window":null,"mlp_only_layers":[0],"decoder_sparse_step":2}
            """);
        Assert.Equal(4, c.NumKeyValueHeads);      // default nH
        Assert.Equal(4, c.HeadDim);               // default H / nH
        Assert.Equal(1e6, c.RopeTheta);
        Assert.Equal(1e-6, c.RmsNormEps);         // qwen default
        Assert.False(c.TieWordEmbeddings);
        Assert.Equal(new[] { 5, 7 }, c.EosTokenIds);
        Assert.Null(c.BosTokenId);
        Assert.False(c.NormTopKProb);
        Assert.False(c.QkvBias);
        Assert.Equal(6, c.ExpertIntermediateSize);
        Assert.Equal(12, c.DenseIntermediateSize);
        // sparse iff not mlp-only and (l+1) % 2 == 0
        Assert.Equal(new[] { false, true, false, true }, Enumerable.Range(0, 4).Select(c.IsSparseLayer).ToArray());

        var m = ReferenceConfig.Parse("""
            {"model_type":"mixtral","hidden_size":8,"num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":1,
             "head_dim":null,"vocab_size":5,"num_local_experts":4,"num_experts_per_tok":2,"intermediate_size":3,
             "eos_token_id":2,"sliding_window":4096,"rope_theta":1e6,"norm_topk_prob":false}
            """);
        Assert.Equal(4, m.HeadDim);
        Assert.Equal(4096, m.SlidingWindow);
        Assert.Equal(new[] { 2 }, m.EosTokenIds);
        Assert.Equal(1e-5, m.RmsNormEps);
        Assert.True(m.RenormalizeTopK);           // mixtral always renormalises
        Assert.True(m.IsSparseLayer(0));

        var q2 = ReferenceConfig.Parse("""
            {"model_type":"qwen2_moe","hidden_size":8,"num_hidden_layers":1,"num_attention_heads":2,"vocab_size":5,
             "num_experts":4,"num_experts_per_tok":2,"moe_intermediate_size":3,"sliding_window":4,"use_sliding_window":false,
             "attention_bias":false}
            """);
        Assert.Null(q2.SlidingWindow);            // only mixtral has a window
        Assert.True(q2.QkvBias);                  // qwen2_moe always biases q/k/v
        Assert.False(q2.OBias);
        Assert.Equal(10000, q2.RopeTheta);

        Assert.Throws<NotSupportedException>(() => ReferenceConfig.Parse("""{"model_type":"llama"}"""));
        Assert.Throws<NotSupportedException>(() => ReferenceConfig.Parse("""
            {"model_type":"olmoe","hidden_size":8,"num_hidden_layers":1,"num_attention_heads":2,"vocab_size":5,
             "num_experts":4,"num_experts_per_tok":2,"intermediate_size":3,"rope_scaling":{"rope_type":"yarn","factor":4}}
            """));
    }

    // ------------------------------------------------------------ hand-built checkpoint

    /// <summary>
    /// mixtral, 1 layer, H=4, 2 heads, 1 kv head (hd=2), 2 experts top-1, I=2, vocab 5, eps 0, tied embeddings.
    /// Embeddings: t0 = (1,1,1,1), t1 = (1,-1,1,-1) (both already unit-RMS), t2..t4 one-hot-ish.
    /// q = (n0, n1 | n2, -2 n3), k = (n0, n2+n3), v = (n0, n1), o = 0.5 I. Router rows (1,0,0,0), (0,2,0,0).
    /// Expert 1: gate = (n0, 0), up = (2 n2, n3), down maps a -> (a0, 0, 0, a1). Expert 0 is a distinct dense blob.
    /// </summary>
    private static (string Config, List<TestTensor> Tensors) HandModel(bool zeroExperts)
    {
        string config = """
            {"model_type":"mixtral","hidden_size":4,"num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":1,
             "vocab_size":5,"num_local_experts":2,"num_experts_per_tok":1,"intermediate_size":2,"rms_norm_eps":0.0,
             "rope_theta":10000.0,"tie_word_embeddings":true,"sliding_window":null}
            """;
        double d = zeroExperts ? 0 : 1;
        var t = new List<TestTensor>
        {
            new("model.embed_tokens.weight", [5, 4], [1, 1, 1, 1, 1, -1, 1, -1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 1, 0, 0]),
            new("model.norm.weight", [4], [1, 1, 1, 1]),
            new("model.layers.0.input_layernorm.weight", [4], [1, 1, 1, 1]),
            new("model.layers.0.post_attention_layernorm.weight", [4], [1, 1, 1, 1]),
            new("model.layers.0.self_attn.q_proj.weight", [4, 4], [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, -2]),
            new("model.layers.0.self_attn.k_proj.weight", [2, 4], [1, 0, 0, 0, 0, 0, 1, 1]),
            new("model.layers.0.self_attn.v_proj.weight", [2, 4], [1, 0, 0, 0, 0, 1, 0, 0]),
            new("model.layers.0.self_attn.o_proj.weight", [4, 4], [0.5, 0, 0, 0, 0, 0.5, 0, 0, 0, 0, 0.5, 0, 0, 0, 0, 0.5]),
            new("model.layers.0.block_sparse_moe.gate.weight", [2, 4], [1, 0, 0, 0, 0, 2, 0, 0]),
            new("model.layers.0.block_sparse_moe.experts.0.w1.weight", [2, 4], Enumerable.Repeat(0.3, 8).ToArray()),
            new("model.layers.0.block_sparse_moe.experts.0.w3.weight", [2, 4], Enumerable.Repeat(0.7, 8).ToArray()),
            new("model.layers.0.block_sparse_moe.experts.0.w2.weight", [4, 2], Enumerable.Repeat(-0.4 * d, 8).ToArray()),
            new("model.layers.0.block_sparse_moe.experts.1.w1.weight", [2, 4], [1, 0, 0, 0, 0, 0, 0, 0]),
            new("model.layers.0.block_sparse_moe.experts.1.w3.weight", [2, 4], [0, 0, 2, 0, 0, 0, 0, 1]),
            new("model.layers.0.block_sparse_moe.experts.1.w2.weight", [4, 2], [d, 0, 0, 0, 0, 0, 0, d]),
        };
        return (config, t);
    }

    private static ReferenceModel LoadHand(TempDir tmp, bool zeroExperts)
    {
        var (config, tensors) = HandModel(zeroExperts);
        string dir = tmp.Sub(zeroExperts ? "hand0" : "hand");
        File.WriteAllText(Path.Combine(dir, "config.json"), config);
        TestSafetensorsWriter.Write(Path.Combine(dir, "model.safetensors"), tensors);
        return ReferenceModel.Load(dir);
    }

    [Fact]
    public void Hand_checkpoint_single_token_logits_match_hand_computation()
    {
        using var tmp = new TempDir();
        var model = LoadHand(tmp, zeroExperts: false);
        double[] logits = model.Forward(model.NewSequence(), [0])[0];

        // Token 0 at position 0: one key, so each head outputs v = (1,1); o = 0.5 -> h = (1.5,1.5,1.5,1.5).
        // post-norm m = (1,1,1,1); router logits (1,2) -> expert 1; mixtral renormalises -> weight 1.
        // Expert 1: gate (1,0), up (2,1) -> silu(1)*2 = 2 sigma(1), silu(0)*1 = 0 -> out (2 sigma(1), 0, 0, 0).
        double x0 = 1.5 + 2 * Sigma(1);
        double rms = Math.Sqrt((x0 * x0 + 3 * 2.25) / 4);
        Assert.Equal(x0 / rms, logits[3], 13);                   // tied head row 3 = (1,0,0,0)
        Assert.Equal((x0 + 4.5) / rms, logits[0], 13);           // row 0 = (1,1,1,1)
        Assert.Equal(2 * Sigma(1) / rms, logits[1], 13);         // row 1 = (1,-1,1,-1): x0 - 1.5
        Assert.Equal(1.5 / rms, logits[2], 13);                  // row 2 = (0,0,1,0)
        Assert.Equal(new[] { 1 }, model.LastRouting[0][0]);
        Assert.Equal(new[] { 1.0 }, model.LastRoutingWeights[0][0]);
    }

    [Fact]
    public void Hand_checkpoint_second_token_attention_matches_hand_computation()
    {
        using var tmp = new TempDir();
        var model = LoadHand(tmp, zeroExperts: true); // experts' down = 0: the MLP adds nothing
        double[][] logits = model.Forward(model.NewSequence(), [0, 1]);

        // Rotation by angle a of a pair (x, y): (x cos a - y sin a, y cos a + x sin a). hd = 2 -> angle = position.
        static (double, double) Rot((double X, double Y) v, double a) =>
            (v.X * Math.Cos(a) - v.Y * Math.Sin(a), v.Y * Math.Cos(a) + v.X * Math.Sin(a));
        static double Dot((double X, double Y) a, (double X, double Y) b) => a.X * b.X + a.Y * b.Y;

        // Position 0, token 0: n = (1,1,1,1): k = (1, 2), v = (1, 1) (no rotation at p = 0).
        // Position 1, token 1: n = (1,-1,1,-1): q0 = (1,-1), q1 = (1, 2), k = (1, 0), v = (1, -1).
        var kA = (1.0, 2.0);
        var kB = Rot((1.0, 0.0), 1);
        var vA = (X: 1.0, Y: 1.0);
        var vB = (X: 1.0, Y: -1.0);
        double[] h = [1, -1, 1, -1];
        int head = 0;
        foreach (var q in new[] { (1.0, -1.0), (1.0, 2.0) })
        {
            var qr = Rot(q, 1);
            double s0 = Dot(qr, kA) / Math.Sqrt(2), s1 = Dot(qr, kB) / Math.Sqrt(2);
            double w0 = Math.Exp(s0) / (Math.Exp(s0) + Math.Exp(s1)), w1 = 1 - w0;
            h[2 * head] += 0.5 * (w0 * vA.X + w1 * vB.X);      // o_proj = 0.5 I
            h[2 * head + 1] += 0.5 * (w0 * vA.Y + w1 * vB.Y);
            head++;
        }
        double rms = Math.Sqrt(h.Sum(x => x * x) / 4);
        double[] expected = [(h[0] + h[1] + h[2] + h[3]) / rms, (h[0] - h[1] + h[2] - h[3]) / rms, h[2] / rms, h[0] / rms, h[1] / rms];
        for (int j = 0; j < 5; j++)
            Assert.Equal(expected[j], logits[1][j], 13);

        // Position 0 sees only itself: h = (1.5, 1.5, 1.5, 1.5) -> normed (1,1,1,1).
        Assert.Equal(new[] { 4.0, 0, 1, 1, 1 }, logits[0].Select(x => Math.Round(x, 12)).ToArray());
    }

    [Fact]
    public void Hand_checkpoint_routing_overrides()
    {
        using var tmp = new TempDir();
        var model = LoadHand(tmp, zeroExperts: false);

        // Router logits (1, 2) -> p = (sigma(-1), sigma(1)); top-2 picks expert 1 first, renormalised over both = p.
        model.Forward(model.NewSequence(), [0], topKExperts: 2);
        Assert.Equal(new[] { 1, 0 }, model.LastRouting[0][0]);
        Assert.Equal(Sigma(1), model.LastRoutingWeights[0][0][0], 15);
        Assert.Equal(Sigma(-1), model.LastRoutingWeights[0][0][1], 15);

        // Disabling expert 1 forces expert 0 (renormalised weight 1), which changes the logits.
        double[] normal = model.Forward(model.NewSequence(), [0])[0];
        double[] forced = model.Forward(model.NewSequence(), [0], disabledExperts: new HashSet<int> { 1 })[0];
        Assert.Equal(new[] { 0 }, model.LastRouting[0][0]);
        Assert.Equal(new[] { 1.0 }, model.LastRoutingWeights[0][0]);
        Assert.NotEqual(normal[3], forced[3]);

        // Expert 0: gate = up-ish blobs: g = 1.2 each, u = 2.8 each, a = silu(1.2) * 2.8, down -0.4 -> each out -0.8 a.
        double a = 1.2 / (1 + Math.Exp(-1.2)) * 2.8;
        double[] x = Enumerable.Repeat(1.5 - 0.8 * a, 4).ToArray();
        Assert.Equal(1.0 * Math.Sign(x[0]), forced[3], 13);      // row 3 picks x0 / rms(x) = sign for a constant vector

        Assert.Throws<ArgumentOutOfRangeException>(() => model.Forward(model.NewSequence(), [0], topKExperts: 3));
        Assert.Throws<ArgumentOutOfRangeException>(() => model.Forward(model.NewSequence(), [0], disabledExperts: new HashSet<int> { 2 }));
    }

    // ------------------------------------------------------------ invariants on random checkpoints, all families

    [Theory]
    [MemberData(nameof(Families))]
    public void Prefill_equals_token_by_token_decode(string family)
    {
        using var tmp = new TempDir();
        var model = ReferenceModel.Load(TinyModel.Create(family).WriteTo(tmp.Path));

        double[][] prefill = model.Forward(model.NewSequence(), Prompt);

        var seq = model.NewSequence();
        var decode = Prompt.Select(t => model.Forward(seq, [t])[0]).ToArray();
        AssertLogitsEqual(prefill, decode, 1e-12);

        var chunked = model.NewSequence();
        var parts = new[] { Prompt[..3], Prompt[3..4], Prompt[4..] }.SelectMany(c => model.Forward(chunked, c)).ToArray();
        AssertLogitsEqual(prefill, parts, 1e-12);
        Assert.Equal(Prompt.Length, chunked.Length);
        Assert.Equal(Prompt, chunked.Tokens);

        // A branch of a cloned prefix continues exactly like the original.
        var prefix = model.NewSequence();
        model.Forward(prefix, Prompt[..6]);
        var branch = prefix.Clone();
        AssertLogitsEqual(model.Forward(prefix, Prompt[6..]), model.Forward(branch, Prompt[6..]), 0);

        // Sanity: the logits actually depend on context (so equality above is not vacuous).
        Assert.NotEqual(prefill[1][0], prefill[3][0]); // same token 1 at positions 1 and 3
        Assert.Empty(model.UnusedTensorNames);
    }

    public static TheoryData<string, string> FusedCases => new()
    {
        { "mixtral", "mlp." }, { "mixtral", "block_sparse_moe." }, { "qwen2_moe", "mlp." }, { "qwen3_moe", "mlp." }, { "olmoe", "mlp." },
    };

    [Theory]
    [MemberData(nameof(FusedCases))]
    public void Fused_v5_layout_gives_identical_logits(string family, string mixtralPrefix)
    {
        using var tmp = new TempDir();
        var tiny = TinyModel.Create(family, seed: 5);
        var perExpert = Run(tiny.WriteTo(tmp.Sub("per")), Prompt);
        var fusedTensors = tiny.FusedTensors(mixtralPrefix);
        Assert.Contains(fusedTensors, t => t.Name.EndsWith("experts.gate_up_proj", StringComparison.Ordinal));
        Assert.DoesNotContain(fusedTensors, t => t.Name.Contains("experts.0.", StringComparison.Ordinal));
        var fusedModel = ReferenceModel.Load(tiny.WriteTo(tmp.Sub("fused"), fusedTensors));
        Assert.Empty(fusedModel.UnusedTensorNames);
        AssertLogitsEqual(perExpert, fusedModel.Forward(fusedModel.NewSequence(), Prompt), 0);

        // Swapping the gate and up halves of the fused tensor must change the result (layout is really read).
        var swapped = fusedTensors.Select(t =>
        {
            if (!t.Name.EndsWith("gate_up_proj", StringComparison.Ordinal))
                return t;
            int e = t.Shape[0], half = t.Shape[1] / 2 * t.Shape[2];
            var data = new double[t.Data.Length];
            for (int j = 0; j < e; j++)
            {
                Array.Copy(t.Data, j * 2 * half, data, j * 2 * half + half, half);
                Array.Copy(t.Data, j * 2 * half + half, data, j * 2 * half, half);
            }
            return t with { Data = data };
        }).ToList();
        var wrong = Run(tiny.WriteTo(tmp.Sub("swapped"), swapped), Prompt);
        Assert.NotEqual(perExpert[^1][0], wrong[^1][0]);
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void BF16_F16_F64_and_sharded_checkpoints_match_F32(string family)
    {
        using var tmp = new TempDir();
        var tiny = TinyModel.Create(family, seed: 9);
        var f32 = Run(tiny.WriteTo(tmp.Sub("f32")), Prompt);
        foreach (string dtype in new[] { "BF16", "F16", "F64" })
            AssertLogitsEqual(f32, Run(tiny.WriteTo(tmp.Sub(dtype), dtype: dtype), Prompt), 0);
        AssertLogitsEqual(f32, Run(tiny.WriteTo(tmp.Sub("sharded"), shards: 3), Prompt), 0);
    }

    [Fact]
    public void Tied_embeddings_equal_an_explicit_copy_of_the_embedding()
    {
        using var tmp = new TempDir();
        var tied = TinyModel.Create("olmoe", seed: 3, tweak: c => c["tie_word_embeddings"] = true);
        Assert.DoesNotContain(tied.Tensors, t => t.Name == "lm_head.weight");
        var tiedLogits = Run(tied.WriteTo(tmp.Sub("tied")), Prompt);

        var embed = tied.Tensors.Single(t => t.Name == "model.embed_tokens.weight");
        var untied = TinyModel.Create("olmoe", seed: 3, tweak: c => c["tie_word_embeddings"] = true);
        untied.Config["tie_word_embeddings"] = false;
        var tensors = untied.Tensors.Append(embed with { Name = "lm_head.weight" }).ToList();
        AssertLogitsEqual(tiedLogits, Run(untied.WriteTo(tmp.Sub("untied"), tensors), Prompt), 0);

        // Untied without lm_head.weight is an error, not a silent tie.
        var missing = TinyModel.Create("olmoe", seed: 3, tweak: c => c["tie_word_embeddings"] = true);
        missing.Config["tie_word_embeddings"] = false;
        Assert.Throws<InvalidDataException>(() => ReferenceModel.Load(missing.WriteTo(tmp.Sub("missing"))));
    }

    [Fact]
    public void Sliding_window_limits_the_receptive_field()
    {
        using var tmp = new TempDir();
        // 2 layers, W = 2: position p sees p-1..p per layer, so position 4 depends on tokens 2..4 only.
        int[] a = [3, 1, 4, 1, 5], b = [7, 8, 4, 1, 5];
        var windowed = ReferenceModel.Load(TinyModel.Create("mixtral", tweak: c => c["sliding_window"] = 2).WriteTo(tmp.Sub("w")));
        var la = windowed.Forward(windowed.NewSequence(), a);
        var lb = windowed.Forward(windowed.NewSequence(), b);
        AssertLogitsEqual([la[4]], [lb[4]], 0);
        Assert.NotEqual(la[2][0], lb[2][0]);
        Assert.NotEqual(la[3][0], lb[3][0]);

        var full = ReferenceModel.Load(TinyModel.Create("mixtral").WriteTo(tmp.Sub("full")));
        Assert.NotEqual(full.Forward(full.NewSequence(), a)[4][0], full.Forward(full.NewSequence(), b)[4][0]);

        // A window at least as long as the sequence is the same as no window.
        var wide = ReferenceModel.Load(TinyModel.Create("mixtral", tweak: c => c["sliding_window"] = 5).WriteTo(tmp.Sub("wide")));
        AssertLogitsEqual(full.Forward(full.NewSequence(), a), wide.Forward(wide.NewSequence(), a), 0);
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void TopK_override_and_disabled_experts_shape_the_routing(string family)
    {
        using var tmp = new TempDir();
        var model = ReferenceModel.Load(TinyModel.Create(family, seed: 11).WriteTo(tmp.Path));
        var c = model.Config;
        int e = c.NumExperts;

        double[][] baseline = model.Forward(model.NewSequence(), Prompt);
        AssertLogitsEqual(baseline, model.Forward(model.NewSequence(), Prompt, disabledExperts: new HashSet<int>()), 0);
        AssertLogitsEqual(baseline, model.Forward(model.NewSequence(), Prompt, topKExperts: c.NumExpertsPerTok), 0);

        // All experts: picks sorted by probability, weights are the full softmax (sums to 1 either way).
        model.Forward(model.NewSequence(), Prompt, topKExperts: e);
        int[][][] all = model.LastRouting;
        double[][][] allWeights = model.LastRoutingWeights;
        for (int l = 0; l < c.NumHiddenLayers; l++)
            for (int t = 0; t < Prompt.Length; t++)
            {
                if (!c.IsSparseLayer(l))
                {
                    Assert.Empty(all[l][t]);
                    continue;
                }
                Assert.Equal(Enumerable.Range(0, e), all[l][t].Order());
                Assert.Equal(1.0, allWeights[l][t].Sum(), 12);
                for (int j = 1; j < e; j++)
                    Assert.True(allWeights[l][t][j - 1] >= allWeights[l][t][j]);
            }

        // Disable expert 0 and the last one: never picked, still k picks; softmax over ALL experts means that
        // without renormalisation the weights at the first sparse layer (whose input does not depend on routing)
        // are exactly the full-softmax probabilities.
        var disabled = new HashSet<int> { 0, e - 1 };
        double[][] restricted = model.Forward(model.NewSequence(), Prompt, disabledExperts: disabled);
        int firstSparse = Enumerable.Range(0, c.NumHiddenLayers).First(c.IsSparseLayer);
        for (int l = 0; l < c.NumHiddenLayers; l++)
            for (int t = 0; t < Prompt.Length; t++)
            {
                int[] picked = model.LastRouting[l][t];
                if (!c.IsSparseLayer(l))
                    continue;
                Assert.Equal(c.NumExpertsPerTok, picked.Length);
                Assert.DoesNotContain(0, picked);
                Assert.DoesNotContain(e - 1, picked);
                if (l == firstSparse && !c.RenormalizeTopK)
                    for (int j = 0; j < picked.Length; j++)
                        Assert.Equal(allWeights[l][t][Array.IndexOf(all[l][t], picked[j])], model.LastRoutingWeights[l][t][j]);
                if (c.RenormalizeTopK)
                    Assert.Equal(1.0, model.LastRoutingWeights[l][t].Sum(), 12);
            }
        Assert.NotEqual(baseline[^1][0], restricted[^1][0]);

        // Fewer enabled experts than k: only the enabled ones are picked.
        model.Forward(model.NewSequence(), Prompt[..2], disabledExperts: Enumerable.Range(1, e - 1).ToHashSet());
        Assert.Equal(new[] { 0 }, model.LastRouting[firstSparse][1]);
    }

    [Fact]
    public void Router_ties_go_to_the_lower_expert_index()
    {
        using var tmp = new TempDir();
        var tiny = TinyModel.Create("mixtral", seed: 2);
        var tensors = tiny.Tensors.Select(t => t.Name == "model.layers.0.block_sparse_moe.gate.weight"
            ? t with { Data = new double[t.Data.Length] } : t).ToList();
        var model = ReferenceModel.Load(tiny.WriteTo(tmp.Path, tensors));
        model.Forward(model.NewSequence(), Prompt, topKExperts: 3);
        foreach (int[] picked in model.LastRouting[0])
            Assert.Equal(new[] { 0, 1, 2 }, picked);
        foreach (double[] w in model.LastRoutingWeights[0])
            Assert.All(w, x => Assert.Equal(1.0 / 3, x, 15));
    }

    [Fact]
    public void Dense_layers_follow_decoder_sparse_step_and_mlp_only_layers()
    {
        using var tmp = new TempDir();
        var q3 = ReferenceModel.Load(TinyModel.Create("qwen3_moe").WriteTo(tmp.Sub("q3")));  // step 2: layer 0 dense
        q3.Forward(q3.NewSequence(), Prompt[..3]);
        Assert.All(q3.LastRouting[0], Assert.Empty);
        Assert.All(q3.LastRouting[1], r => Assert.Equal(2, r.Length));

        var q2 = ReferenceModel.Load(TinyModel.Create("qwen2_moe").WriteTo(tmp.Sub("q2")));  // mlp_only_layers [1]
        q2.Forward(q2.NewSequence(), Prompt[..3]);
        Assert.All(q2.LastRouting[1], Assert.Empty);
        Assert.All(q2.LastRouting[0], r => Assert.Equal(2, r.Length));
        Assert.All(q2.LastRouting[2], r => Assert.Equal(2, r.Length));
    }

    [Fact]
    public void Missing_or_misshapen_tensors_are_rejected()
    {
        using var tmp = new TempDir();
        var tiny = TinyModel.Create("qwen2_moe");
        var noBias = tiny.Tensors.Where(t => t.Name != "model.layers.0.self_attn.k_proj.bias").ToList();
        var ex = Assert.Throws<InvalidDataException>(() => ReferenceModel.Load(tiny.WriteTo(tmp.Sub("a"), noBias)));
        Assert.Contains("k_proj.bias", ex.Message);

        var badShape = tiny.Tensors.Select(t => t.Name == "model.layers.2.mlp.gate.weight" ? t with { Shape = [t.Shape[1], t.Shape[0]] } : t).ToList();
        ex = Assert.Throws<InvalidDataException>(() => ReferenceModel.Load(tiny.WriteTo(tmp.Sub("b"), badShape)));
        Assert.Contains("mlp.gate.weight", ex.Message);

        var extra = tiny.Tensors.Append(new TestTensor("model.rotary_emb.inv_freq", [2], [1, 0.5])).ToList();
        Assert.Equal(new[] { "model.rotary_emb.inv_freq" }, ReferenceModel.Load(tiny.WriteTo(tmp.Sub("c"), extra)).UnusedTensorNames);
    }

    [Fact]
    public void Config_json_written_by_the_test_builder_round_trips()
    {
        // Guards the fixtures: if the builder wrote a field the parser ignores, the other tests would test less.
        var tiny = TinyModel.Create("qwen2_moe");
        var c = ReferenceConfig.Parse(JsonSerializer.Serialize(tiny.Config));
        Assert.Equal(6, c.SharedExpertIntermediateSize);
        Assert.Equal(new[] { 1 }, c.MlpOnlyLayers);
        Assert.Equal(7, c.DenseIntermediateSize);
        Assert.Equal(5, c.ExpertIntermediateSize);
        var o = ReferenceConfig.Parse(JsonSerializer.Serialize(TinyModel.Create("olmoe").Config));
        Assert.Equal(0.3, o.ClipQkv);
        var q3 = ReferenceConfig.Parse(JsonSerializer.Serialize(TinyModel.Create("qwen3_moe").Config));
        Assert.Equal(500.0, q3.RopeTheta);
        Assert.Equal(6, q3.HeadDim);
        Assert.True(q3.OBias);
    }

    [Fact]
    public void Hand_qwen2_moe_shared_expert_and_unnormalised_weights_match_hand_computation()
    {
        // The mixtral hand model rewritten as qwen2_moe (mlp.* names, zero q/k/v biases, norm_topk_prob false)
        // plus a width-1 shared expert: gate (1,0,0,0), up (0,0,0,1), down e1, shared_expert_gate (0.5,0,0,0).
        using var tmp = new TempDir();
        var (_, mixtral) = HandModel(zeroExperts: false);
        var tensors = mixtral.Select(t => t with
        {
            Name = t.Name.Replace("block_sparse_moe.", "mlp.", StringComparison.Ordinal)
                .Replace(".w1.", ".gate_proj.", StringComparison.Ordinal)
                .Replace(".w3.", ".up_proj.", StringComparison.Ordinal)
                .Replace(".w2.", ".down_proj.", StringComparison.Ordinal),
        }).ToList();
        tensors.Add(new("model.layers.0.self_attn.q_proj.bias", [4], new double[4]));
        tensors.Add(new("model.layers.0.self_attn.k_proj.bias", [2], new double[2]));
        tensors.Add(new("model.layers.0.self_attn.v_proj.bias", [2], new double[2]));
        tensors.Add(new("model.layers.0.mlp.shared_expert.gate_proj.weight", [1, 4], [1, 0, 0, 0]));
        tensors.Add(new("model.layers.0.mlp.shared_expert.up_proj.weight", [1, 4], [0, 0, 0, 1]));
        tensors.Add(new("model.layers.0.mlp.shared_expert.down_proj.weight", [4, 1], [0, 1, 0, 0]));
        tensors.Add(new("model.layers.0.mlp.shared_expert_gate.weight", [1, 4], [0.5, 0, 0, 0]));
        string dir = tmp.Sub("q2");
        File.WriteAllText(Path.Combine(dir, "config.json"), """
            {"model_type":"qwen2_moe","hidden_size":4,"num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":1,
             "vocab_size":5,"num_experts":2,"num_experts_per_tok":1,"moe_intermediate_size":2,"intermediate_size":3,
             "shared_expert_intermediate_size":1,"norm_topk_prob":false,"rms_norm_eps":0.0,"tie_word_embeddings":true}
            """);
        TestSafetensorsWriter.Write(Path.Combine(dir, "model.safetensors"), tensors);
        var model = ReferenceModel.Load(dir);
        Assert.Empty(model.UnusedTensorNames);
        double[] logits = model.Forward(model.NewSequence(), [0])[0];

        // m = (1,1,1,1) as before; p = (sigma(-1), sigma(1)); expert 1 alone with weight sigma(1) (no renormalisation).
        // Routed: sigma(1) * (2 sigma(1), 0, 0, 0). Shared: sigmoid(0.5) * silu(1) * 1 on coordinate 1.
        double x0 = 1.5 + 2 * Sigma(1) * Sigma(1);
        double x1 = 1.5 + Sigma(0.5) * Sigma(1);
        double rms = Math.Sqrt((x0 * x0 + x1 * x1 + 2 * 2.25) / 4);
        Assert.Equal(x0 / rms, logits[3], 13);
        Assert.Equal(x1 / rms, logits[4], 13);
        Assert.Equal(1.5 / rms, logits[2], 13);
        Assert.Equal(new[] { Sigma(1) }, model.LastRoutingWeights[0][0]);
    }

    /// <summary>Rewrites a checkpoint with nKV = nH by repeating each kv head for its query group (HF repeat_kv).</summary>
    private static List<TestTensor> RepeatKvHeads(TinyModel tiny, int nH, int nKV, int hd)
    {
        int group = nH / nKV;
        double[] Repeat(double[] data, int rowLen) =>
            Enumerable.Range(0, nH).SelectMany(j => data.Skip(j / group * hd * rowLen).Take(hd * rowLen)).ToArray();
        return tiny.Tensors.Select(t =>
        {
            bool kv = t.Name.EndsWith("k_proj.weight", StringComparison.Ordinal) || t.Name.EndsWith("v_proj.weight", StringComparison.Ordinal);
            bool kvVec = t.Name.EndsWith("k_proj.bias", StringComparison.Ordinal) || t.Name.EndsWith("v_proj.bias", StringComparison.Ordinal)
                || (tiny.ModelType == "olmoe" && t.Name.EndsWith("k_norm.weight", StringComparison.Ordinal));
            if (kv)
                return t with { Shape = [nH * hd, t.Shape[1]], Data = Repeat(t.Data, t.Shape[1]) };
            if (kvVec)
                return t with { Shape = [nH * hd], Data = Repeat(t.Data, 1) };
            return t;
        }).ToList();
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void Grouped_query_attention_equals_multi_head_attention_with_repeated_kv_heads(string family)
    {
        using var tmp = new TempDir();
        var tiny = TinyModel.Create(family, seed: 21, tweak: c => c["num_key_value_heads"] = family == "qwen2_moe" ? 1 : 2);
        var gqa = ReferenceModel.Load(tiny.WriteTo(tmp.Sub("gqa")));
        var c = gqa.Config;
        Assert.True(c.NumKeyValueHeads < c.NumAttentionHeads);
        var expected = gqa.Forward(gqa.NewSequence(), Prompt);

        var mha = TinyModel.Create(family, seed: 21, tweak: x => x["num_key_value_heads"] = c.NumAttentionHeads);
        var tensors = RepeatKvHeads(tiny, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim);
        AssertLogitsEqual(expected, Run(mha.WriteTo(tmp.Sub("mha"), tensors), Prompt), 1e-12);
    }

    /// <summary>Multiplies the rows of q_proj (and its bias) that belong to the given heads by a factor.</summary>
    private static List<TestTensor> ScaleQHeads(IEnumerable<TestTensor> tensors, int hd, HashSet<int> heads, double factor) =>
        tensors.Select(t =>
        {
            bool w = t.Name.EndsWith("q_proj.weight", StringComparison.Ordinal), b = t.Name.EndsWith("q_proj.bias", StringComparison.Ordinal);
            if (!w && !b)
                return t;
            int rowLen = w ? t.Shape[1] : 1;
            var data = (double[])t.Data.Clone();
            for (int i = 0; i < data.Length; i++)
                if (heads.Contains(i / rowLen / hd))
                    data[i] *= factor;
            return t with { Data = data };
        }).ToList();

    [Fact]
    public void Qk_norm_is_per_head_for_qwen3_moe_and_full_width_for_olmoe()
    {
        // With eps = 0 an RMSNorm is blind to a positive scale of its input: scaling ONE q head is invisible
        // to a per-head norm (qwen3_moe) but not to a full-width norm (olmoe); scaling ALL of q is invisible to both.
        using var tmp = new TempDir();
        foreach (string family in new[] { "qwen3_moe", "olmoe" })
        {
            var tiny = TinyModel.Create(family, seed: 4, tweak: c => { c["rms_norm_eps"] = 0.0; c["clip_qkv"] = null; });
            int hd = family == "qwen3_moe" ? 6 : 2;
            var baseline = Run(tiny.WriteTo(tmp.Sub(family)), Prompt);
            var all = Run(tiny.WriteTo(tmp.Sub(family + "-all"), ScaleQHeads(tiny.Tensors, hd, new HashSet<int> { 0, 1, 2, 3 }, 3.0)), Prompt);
            AssertLogitsEqual(baseline, all, 1e-12);
            var one = Run(tiny.WriteTo(tmp.Sub(family + "-one"), ScaleQHeads(tiny.Tensors, hd, new HashSet<int> { 1 }, 3.0)), Prompt);
            if (family == "qwen3_moe")
                AssertLogitsEqual(baseline, one, 1e-12);
            else
                Assert.NotEqual(baseline[^1][0], one[^1][0], 6);
        }
    }

    [Fact]
    public void Olmoe_clip_qkv_only_matters_when_it_bites()
    {
        using var tmp = new TempDir();
        var none = Run(TinyModel.Create("olmoe", tweak: c => c["clip_qkv"] = null).WriteTo(tmp.Sub("none")), Prompt);
        var huge = Run(TinyModel.Create("olmoe", tweak: c => c["clip_qkv"] = 1e9).WriteTo(tmp.Sub("huge")), Prompt);
        var tight = Run(TinyModel.Create("olmoe", tweak: c => c["clip_qkv"] = 0.3).WriteTo(tmp.Sub("tight")), Prompt);
        AssertLogitsEqual(none, huge, 0);
        Assert.NotEqual(none[^1][0], tight[^1][0], 6);
    }

    [Fact]
    public void Rope_theta_and_eps_from_config_reach_the_computation()
    {
        using var tmp = new TempDir();
        // qwen3_moe fixture has head_dim 6, so theta affects the second and third rotation frequencies.
        var a = Run(TinyModel.Create("qwen3_moe").WriteTo(tmp.Sub("a")), Prompt);
        var b = Run(TinyModel.Create("qwen3_moe", tweak: c => c["rope_parameters"] = new Dictionary<string, object> { ["rope_theta"] = 7.0 }).WriteTo(tmp.Sub("b")), Prompt);
        var e = Run(TinyModel.Create("qwen3_moe", tweak: c => c["rms_norm_eps"] = 0.5).WriteTo(tmp.Sub("e")), Prompt);
        AssertLogitsEqual([a[0]], [b[0]], 1e-12);                 // position 0: RoPE is the identity
        Assert.NotEqual(a[^1][0], b[^1][0], 6);
        Assert.NotEqual(a[0][0], e[0][0], 6);
    }
}
