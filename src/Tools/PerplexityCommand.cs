using MoeServer.Kernels.Generation;
using MoeServer.Kernels.Tokenization;

namespace MoeServer.Tools;

internal static class PerplexityCommand
{
    public static int Run(string[] args)
    {
        var cl = new CommandLine(args, new HashSet<string>());
        string dir = ModelLocator.Resolve(cl.String("model"));
        string file = cl.Required("file");
        int ctx = cl.Int("ctx", 512);
        var precision = ModelLocator.ParsePrecision(cl.String("precision"));
        cl.RejectUnknown();
        if (!File.Exists(file)) throw new UsageException($"--file {file} does not exist");
        var tokenizer = ModelTokenizer.Load(dir);
        var tokens = tokenizer.Encode(File.ReadAllText(file), parseSpecialTokens: false);
        using var model = ModelLocator.Load(dir, precision);
        var progress = new ConsoleProgress("perplexity");
        var r = PerplexityEvaluator.Evaluate(model, tokens, ctx, (d, t) => progress.Report(d, t));
        Console.WriteLine($"perplexity: {r.Perplexity:F4}");
        Console.WriteLine($"mean NLL: {r.MeanNll:F6} over {r.ScoredTokens} scored tokens");
        Console.WriteLine($"protocol: {r.Protocol}");
        return 0;
    }
}
