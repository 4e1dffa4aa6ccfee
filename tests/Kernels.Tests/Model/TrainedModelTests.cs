using System.Text.Json;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Generation;
using MoeServer.Kernels.Model;
using MoeServer.Kernels.Tests.Reference;
using MoeServer.Kernels.Tests.Support;
using MoeServer.Kernels.Tokenization;
using static MoeServer.Kernels.Tests.Support.ParityAssert;

namespace MoeServer.Kernels.Tests.Model;

/// <summary>
/// The models the project trained and committed (models/readme-moe, models/mixtral-moe): the serving runtime agrees
/// with the independent float64 reference on them, and their held-out perplexity is still what their model card says
/// (no silent drift in the runtime, the tokenizer or the checkpoint).
/// </summary>
public sealed class TrainedModelTests
{
    private const double Fp32Tolerance = 1e-3;
    private const double Bf16Tolerance = 3e-2;
    private const string Prompt = "In the beginning God created the heaven and the earth.";

    public static TheoryData<string> Models => new() { "readme-moe", "mixtral-moe" };

    /// <summary>The reference for the checkpoint's family, as one sequence fed step by step, with its routing.</summary>
    private sealed class ReferenceRun
    {
        private readonly Func<IReadOnlyList<int>, double[][]> _forward;
        private readonly Func<int[][][]> _routing;

        public ReferenceRun(string dir, ModelArchitecture arch)
        {
            if (arch == ModelArchitecture.RouterDecoupled)
            {
                var m = ReferenceRouterDecoupledModel.Load(dir);
                var seq = m.NewSequence();
                _forward = t => m.Forward(seq, t);
                _routing = () => m.LastRouting;
            }
            else
            {
                var m = ReferenceModel.Load(dir);
                var seq = m.NewSequence();
                _forward = t => m.Forward(seq, t);
                _routing = () => m.LastRouting;
            }
        }

        public double[][] Forward(IReadOnlyList<int> tokens) => _forward(tokens);
        public int[][][] LastRouting => _routing();
    }

    private static int ArgMax(double[] row)
    {
        int best = 0;
        for (int i = 1; i < row.Length; i++) if (row[i] > row[best]) best = i;
        return best;
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void Prefill_and_greedy_decode_match_the_float64_reference(string name)
    {
        string dir = TrainedModels.Dir(name);
        var prompt = HfTokenizer.Load(dir).Encode(Prompt, parseSpecialTokens: false);
        using var model = MoeModel.Load(dir, WeightPrecision.F32);
        var reference = new ReferenceRun(dir, model.Config.Architecture);
        var seen = new List<ExpertRouting>();
        model.RoutingObserver = seen.Add;
        using var seq = model.NewSequence();

        var want = reference.Forward(prompt);
        AssertClose(model.ForwardSequence(seq, prompt), want, Fp32Tolerance, $"{name} prefill");
        AssertSameRouting(seen, reference.LastRouting, $"{name} prefill");
        seen.Clear();
        int next = ArgMax(want[^1]);
        for (int step = 0; step < 6; step++)
        {
            want = reference.Forward([next]);
            AssertClose(model.ForwardSequence(seq, [next]), want, Fp32Tolerance, $"{name} decode step {step}");
            AssertSameRouting(seen, reference.LastRouting, $"{name} decode step {step}");
            seen.Clear();
            next = ArgMax(want[^1]);
        }
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void As_served_bf16_prefill_stays_close_to_the_float64_reference(string name)
    {
        string dir = TrainedModels.Dir(name);
        var prompt = HfTokenizer.Load(dir).Encode(Prompt, parseSpecialTokens: false);
        using var model = MoeModel.Load(dir, WeightPrecision.BF16);
        var reference = new ReferenceRun(dir, model.Config.Architecture);
        using var seq = model.NewSequence();
        AssertClose(model.ForwardSequence(seq, prompt), reference.Forward(prompt), Bf16Tolerance, $"{name} bf16 prefill");
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void Held_out_perplexity_is_within_two_percent_of_the_model_card(string name)
    {
        string dir = TrainedModels.Dir(name);
        using var card = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "model-card.json")));
        var root = card.RootElement;
        double expected = root.GetProperty("held_out_perplexity").GetDouble();
        int window = root.GetProperty("window").GetInt32();
        string heldOut = TrainedModels.CorpusFile(root.GetProperty("held_out_file").GetString()!);
        Assert.True(File.Exists(heldOut), $"{heldOut} is missing (the committed held-out subset)");

        using var model = MoeModel.Load(dir, WeightPrecision.BF16);
        var tokens = PerplexityEvaluator.LineDocuments(HfTokenizer.Load(dir), heldOut);
        var measured = PerplexityEvaluator.EvaluateWindows(model, tokens, window);

        Assert.Equal(root.GetProperty("scored_tokens").GetInt64(), measured.ScoredTokens);
        double drift = measured.Perplexity / expected - 1;
        Assert.True(Math.Abs(drift) < 0.02,
            $"{name}: held-out perplexity {measured.Perplexity:F3}, model card {expected:F3} ({drift:P2} apart, more than 2%)");
    }
}
