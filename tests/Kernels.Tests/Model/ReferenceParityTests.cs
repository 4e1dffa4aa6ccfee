using MoeServer.Kernels.Config;
using MoeServer.Kernels.Formats;
using MoeServer.Kernels.Model;
using MoeServer.Kernels.Tests.Reference;
using MoeServer.Kernels.Tests.Support;
using static MoeServer.Kernels.Tests.Support.ParityAssert;

namespace MoeServer.Kernels.Tests.Model;

/// <summary>
/// The TorchSharp model against the independent float64 reference (tests/Kernels.Tests/Reference), for every
/// family: prefill, incremental decode with the KV cache, and a mixed batch, in fp32 and bf16 weights.
/// </summary>
public class ReferenceParityTests
{
    public static TheoryData<ModelArchitecture> Families =>
        new() { ModelArchitecture.Mixtral, ModelArchitecture.Qwen2Moe, ModelArchitecture.Qwen3Moe, ModelArchitecture.Olmoe };

    private const double Fp32Tolerance = 1e-4;
    private const double Bf16Tolerance = 2e-2;

    private static readonly int[] Prompt = [3, 41, 97, 260, 15, 8, 300, 77, 129, 5, 411, 64];

    [Theory]
    [MemberData(nameof(Families))]
    public void Prefill_logits_match_reference_in_fp32(ModelArchitecture arch) => Prefill(arch, WeightPrecision.F32, Fp32Tolerance);

    [Theory]
    [MemberData(nameof(Families))]
    public void Prefill_logits_match_reference_in_bf16(ModelArchitecture arch) => Prefill(arch, WeightPrecision.BF16, Bf16Tolerance);

    /// <summary>Prefill-sized bf16 matmuls go through torch's bf16 matmul on CPUs with bf16 hardware and through
    /// widened fp32 weights elsewhere; both must agree with the reference whatever machine runs the tests.</summary>
    [Theory]
    [InlineData(ModelArchitecture.Mixtral, true)]
    [InlineData(ModelArchitecture.Mixtral, false)]
    [InlineData(ModelArchitecture.Qwen2Moe, true)]
    [InlineData(ModelArchitecture.Olmoe, false)]
    public void Bf16_prefill_matches_reference_on_both_matmul_paths(ModelArchitecture arch, bool torchBf16)
    {
        var saved = TorchRuntime.Bf16MatmulOverride;
        TorchRuntime.Bf16MatmulOverride = torchBf16;
        try
        {
            string dir = TinyCheckpoints.Get(arch);
            var reference = ReferenceModel.Load(dir);
            using var model = MoeModel.Load(dir, WeightPrecision.BF16);
            using var seq = model.NewSequence();
            // 40 tokens: above the native-kernel row limit, so the torch matmul path runs.
            var prompt = Enumerable.Range(0, 40).Select(i => Prompt[i % Prompt.Length] + i).ToArray();
            AssertClose(model.ForwardSequence(seq, prompt), reference.Forward(reference.NewSequence(), prompt), Bf16Tolerance,
                $"{arch} bf16 prefill, torch bf16 matmul={torchBf16}");
        }
        finally
        {
            TorchRuntime.Bf16MatmulOverride = saved;
        }
    }

    private static void Prefill(ModelArchitecture arch, WeightPrecision precision, double tol)
    {
        string dir = TinyCheckpoints.Get(arch);
        var reference = ReferenceModel.Load(dir);
        using var model = MoeModel.Load(dir, precision);
        using var seq = model.NewSequence();
        var got = model.ForwardSequence(seq, Prompt);
        var want = reference.Forward(reference.NewSequence(), Prompt);
        AssertClose(got, want, tol, $"{arch} {precision} prefill");
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void Incremental_decode_with_kv_cache_matches_reference_in_fp32(ModelArchitecture arch) =>
        Decode(arch, WeightPrecision.F32, Fp32Tolerance);

    [Theory]
    [MemberData(nameof(Families))]
    public void Incremental_decode_with_kv_cache_matches_reference_in_bf16(ModelArchitecture arch) =>
        Decode(arch, WeightPrecision.BF16, Bf16Tolerance);

    private static void Decode(ModelArchitecture arch, WeightPrecision precision, double tol)
    {
        string dir = TinyCheckpoints.Get(arch);
        var reference = ReferenceModel.Load(dir);
        using var model = MoeModel.Load(dir, precision);
        using var seq = model.NewSequence(initialCapacity: 2); // forces the cache to grow while decoding
        var rseq = reference.NewSequence();
        model.ForwardSequence(seq, Prompt[..5]);
        reference.Forward(rseq, Prompt[..5]);
        for (int i = 5; i < Prompt.Length; i++)
        {
            var got = model.ForwardSequence(seq, [Prompt[i]]);
            var want = reference.Forward(rseq, [Prompt[i]]);
            AssertClose(got, want, tol, $"{arch} {precision} decode step {i}");
        }
        Assert.Equal(Prompt.Length, seq.Length);
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void Mixed_batch_of_prefill_chunks_and_decode_tokens_equals_each_sequence_alone(ModelArchitecture arch)
    {
        string dir = TinyCheckpoints.Get(arch);
        var reference = ReferenceModel.Load(dir);
        using var model = MoeModel.Load(dir, WeightPrecision.F32);
        // A: 5 tokens already in cache, decodes 1. B: fresh prefill of 7. C: 3 in cache, next chunk of 4.
        using var a = model.NewSequence();
        using var b = model.NewSequence();
        using var c = model.NewSequence();
        model.ForwardSequence(a, Prompt[..5]);
        model.ForwardSequence(c, Prompt[4..7]);
        var batch = new BatchLayout([
            new BatchSegment(a, [Prompt[5]]),
            new BatchSegment(b, Prompt[..7]),
            new BatchSegment(c, Prompt[7..11]),
        ]);
        using var logits = model.Forward(batch, LogitRows.All);
        var flat = TorchInterop.ToFloatArray(logits);
        int v = model.Config.VocabSize;
        float[] Row(int r) => flat.AsSpan(r * v, v).ToArray();

        var ra = reference.NewSequence();
        reference.Forward(ra, Prompt[..5]);
        var wantA = reference.Forward(ra, [Prompt[5]]);
        var wantB = reference.Forward(reference.NewSequence(), Prompt[..7]);
        var rc = reference.NewSequence();
        reference.Forward(rc, Prompt[4..7]);
        var wantC = reference.Forward(rc, Prompt[7..11]);

        AssertClose([Row(0)], wantA, Fp32Tolerance, "segment A (decode)");
        AssertClose(Enumerable.Range(1, 7).Select(Row).ToArray(), wantB, Fp32Tolerance, "segment B (prefill)");
        AssertClose(Enumerable.Range(8, 4).Select(Row).ToArray(), wantC, Fp32Tolerance, "segment C (chunk)");
        Assert.Equal([6, 7, 7], new[] { a.Length, b.Length, c.Length });

        // Last-row selection returns the same rows as the full matrix.
        using var d = model.NewSequence();
        using var e = model.NewSequence();
        using var last = model.Forward(new BatchLayout([new BatchSegment(d, Prompt[..3]), new BatchSegment(e, Prompt[..6])]));
        var lastFlat = TorchInterop.ToFloatArray(last);
        AssertClose([lastFlat[..v], lastFlat[v..]], [wantB[2], wantB[5]], Fp32Tolerance, "last rows");
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void Batched_decode_of_many_sequences_matches_reference_in_fp32(ModelArchitecture arch) =>
        BatchedDecode(arch, WeightPrecision.F32, Fp32Tolerance);

    [Theory]
    [MemberData(nameof(Families))]
    public void Batched_decode_of_many_sequences_matches_reference_in_bf16(ModelArchitecture arch) =>
        BatchedDecode(arch, WeightPrecision.BF16, Bf16Tolerance);

    /// <summary>Five sequences of different lengths decode together (the native decode path with several rows per
    /// expert); each row must equal that sequence decoded alone by the reference.</summary>
    private static void BatchedDecode(ModelArchitecture arch, WeightPrecision precision, double tol)
    {
        string dir = TinyCheckpoints.Get(arch);
        var reference = ReferenceModel.Load(dir);
        using var model = MoeModel.Load(dir, precision);
        int n = 5;
        var seqs = Enumerable.Range(0, n).Select(_ => model.NewSequence()).ToList();
        var refs = Enumerable.Range(0, n).Select(_ => reference.NewSequence()).ToList();
        for (int i = 0; i < n; i++)
        {
            var prefix = Prompt.Skip(i).Take(3 + i).ToArray();
            model.ForwardSequence(seqs[i], prefix);
            reference.Forward(refs[i], prefix);
        }
        for (int step = 0; step < 3; step++)
        {
            var tokens = Enumerable.Range(0, n).Select(i => Prompt[(i * 5 + step) % Prompt.Length]).ToArray();
            using var logits = model.Forward(new BatchLayout(seqs.Select((s, i) => new BatchSegment(s, [tokens[i]])).ToList()));
            var flat = TorchInterop.ToFloatArray(logits);
            int v = model.Config.VocabSize;
            for (int i = 0; i < n; i++)
            {
                var want = reference.Forward(refs[i], [tokens[i]]);
                AssertClose([flat.AsSpan(i * v, v).ToArray()], want, tol, $"{arch} {precision} step {step} sequence {i}");
            }
        }
        foreach (var s in seqs) s.Dispose();
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void Fused_v5_expert_layout_matches_reference(ModelArchitecture arch)
    {
        string dir = TinyCheckpoints.Get(arch, fused: true);
        var reference = ReferenceModel.Load(dir);
        using var model = MoeModel.Load(dir, WeightPrecision.F32);
        using var seq = model.NewSequence();
        AssertClose(model.ForwardSequence(seq, Prompt), reference.Forward(reference.NewSequence(), Prompt), Fp32Tolerance, "fused");
    }

    [Theory]
    [InlineData(TensorDType.F32)]
    [InlineData(TensorDType.F16)]
    public void F32_and_F16_checkpoints_load_and_match_reference(TensorDType dtype)
    {
        string dir = TinyCheckpoints.Get(ModelArchitecture.Qwen2Moe, dtype: dtype);
        var reference = ReferenceModel.Load(dir);
        using var model = MoeModel.Load(dir, WeightPrecision.F32);
        using var seq = model.NewSequence();
        AssertClose(model.ForwardSequence(seq, Prompt), reference.Forward(reference.NewSequence(), Prompt), Fp32Tolerance, dtype.ToString());
        using var bf = MoeModel.Load(dir, WeightPrecision.BF16);
        using var seq2 = bf.NewSequence();
        AssertClose(bf.ForwardSequence(seq2, Prompt), reference.Forward(reference.NewSequence(), Prompt), Bf16Tolerance, dtype + " as bf16");
    }

    [Fact]
    public void Sharded_checkpoint_gives_the_same_logits_as_single_file()
    {
        string single = TinyCheckpoints.Get(ModelArchitecture.Mixtral);
        string sharded = TinyCheckpoints.Get(ModelArchitecture.Mixtral, shards: 3);
        Assert.True(File.Exists(Path.Combine(sharded, Checkpoint.IndexFileName)));
        using var m1 = MoeModel.Load(single, WeightPrecision.F32);
        using var m2 = MoeModel.Load(sharded, WeightPrecision.F32);
        using var s1 = m1.NewSequence();
        using var s2 = m2.NewSequence();
        var a = m1.ForwardSequence(s1, Prompt);
        var b = m2.ForwardSequence(s2, Prompt);
        for (int t = 0; t < a.Length; t++) Assert.Equal(a[t], b[t]);
    }

    [Fact]
    public void Sliding_window_attention_matches_reference()
    {
        string dir = TinyCheckpoints.Get(ModelArchitecture.Mixtral, variant: "window4", edit: c => c with { SlidingWindow = 4 });
        var reference = ReferenceModel.Load(dir);
        using var model = MoeModel.Load(dir, WeightPrecision.F32);
        using var seq = model.NewSequence();
        var rseq = reference.NewSequence();
        AssertClose(model.ForwardSequence(seq, Prompt[..8]), reference.Forward(rseq, Prompt[..8]), Fp32Tolerance, "window prefill");
        for (int i = 8; i < Prompt.Length; i++)
            AssertClose(model.ForwardSequence(seq, [Prompt[i]]), reference.Forward(rseq, [Prompt[i]]), Fp32Tolerance, $"window decode {i}");
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void Routing_overrides_match_reference(ModelArchitecture arch)
    {
        string dir = TinyCheckpoints.Get(arch);
        var reference = ReferenceModel.Load(dir);
        using var model = MoeModel.Load(dir, WeightPrecision.F32);
        int layers = model.Config.NumLayers;
        var disabled = new HashSet<(int, int)>(Enumerable.Range(0, layers).Select(l => (l, 1)));
        var overrides = new RoutingOverride(TopKExperts: 3, DisabledExperts: disabled);
        using var seq = model.NewSequence();
        var got = model.ForwardSequence(seq, Prompt, overrides);
        var want = reference.Forward(reference.NewSequence(), Prompt, topKExperts: 3, disabledExperts: new HashSet<int> { 1 });
        AssertClose(got, want, Fp32Tolerance, "top-3 with expert 1 off");
        using var plain = model.NewSequence();
        Assert.True(RelativeError(model.ForwardSequence(plain, Prompt)[^1], want[^1]) > 1e-3, "overrides must change the output");
    }
}
