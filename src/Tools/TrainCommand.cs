using MoeServer.Kernels.Config;
using MoeServer.Kernels.Tokenization;
using MoeServer.Tools.Training;

namespace MoeServer.Tools;

/// <summary>train: trains a mixtral-format model (a dense Llama-style one with --experts 1) or a router-decoupled
/// readme_moe model on a corpus file.</summary>
internal static class TrainCommand
{
    public static int Run(string[] args)
    {
        var cl = new CommandLine(args, new HashSet<string> { "resume", "untie-embeddings" });
        string tokenizerDir = cl.Required("tokenizer");
        var options = new TrainingOptions
        {
            TrainText = cl.Required("train"),
            HeldOutText = cl.String("held-out"),
            TokenizerDir = tokenizerDir,
            OutDir = cl.Required("out"),
            Steps = cl.Int("steps", 2000),
            BatchSize = cl.Int("batch", 16),
            SequenceLength = cl.Int("seq", 128),
            LearningRate = cl.Double("lr", 3e-3),
            WarmupSteps = cl.Int("warmup", 100),
            WeightDecay = cl.Double("weight-decay", 0.1),
            BalanceLossWeight = cl.Double("balance", 0.01),
            Seed = cl.Long("seed", 1),
            CheckpointEvery = cl.Int("checkpoint-every", 200),
            EvalWindows = cl.Int("eval-windows", 0),
            StopAfter = cl.String("stop-after") is { } s ? int.Parse(s, System.Globalization.CultureInfo.InvariantCulture) : null,
        };
        int hidden = cl.Int("hidden", 256), heads = cl.Int("heads", 4);
        int experts = cl.Int("experts", 8);
        string arch = cl.String("arch") ?? "mixtral";
        if (arch is not ("mixtral" or "readme_moe")) throw new UsageException($"--arch must be mixtral or readme_moe, got '{arch}'");
        bool decoupled = arch == "readme_moe";
        int routerHidden = cl.Int("router-hidden", 64), routerHeads = cl.Int("router-heads", 2);
        var router = decoupled
            ? new RouterConfig(routerHidden, cl.Int("router-layers", 2), routerHeads, cl.Int("router-kv-heads", 1),
                routerHidden / routerHeads, cl.Int("router-mlp", 2 * routerHidden))
            : null;
        bool resume = cl.Flag("resume");
        var tokenizer = HfTokenizer.Load(tokenizerDir);
        var config = new ModelConfig
        {
            Architecture = decoupled ? ModelArchitecture.RouterDecoupled : ModelArchitecture.Mixtral,
            HiddenSize = hidden,
            NumLayers = cl.Int("layers", 4),
            NumHeads = heads,
            NumKvHeads = cl.Int("kv-heads", 2),
            HeadDim = hidden / heads,
            VocabSize = tokenizer.VocabSize,
            RmsNormEps = 1e-5,
            RopeTheta = 10000,
            MaxPositionEmbeddings = cl.Int("max-position", 2048),
            NumExperts = experts,
            NumExpertsPerToken = cl.Int("top-k", decoupled ? 1 : Math.Min(2, experts)),
            ExpertIntermediateSize = cl.Int("expert-size", 512),
            DenseIntermediateSize = cl.Int("expert-size", 512),
            NormTopKProb = !decoupled,
            SharedExpertIntermediateSize = decoupled ? cl.Int("shared-expert", 0) : 0,
            Router = router,
            // Small models: the LM head shares the embedding matrix (half the vocabulary parameters).
            TieWordEmbeddings = !cl.Flag("untie-embeddings"),
            EosTokenIds = tokenizer.EosId is { } eos ? [eos] : [],
            TorchDtype = "bfloat16",
        };
        cl.RejectUnknown();
        if (options.Steps < 1 || options.BatchSize < 1 || options.SequenceLength < 2) throw new UsageException("--steps, --batch and --seq must be positive");
        var result = new Trainer(config, options, m => Console.Error.WriteLine(m)).Run(resume);
        Console.WriteLine($"steps {result.Steps} loss {result.FinalLoss:F4} held-out-perplexity {result.HeldOutPerplexity?.ToString("F3") ?? "n/a"} tokens/s {result.TokensPerSecond:F0} seconds {result.Elapsed.TotalSeconds:F0}");
        return 0;
    }
}
