using MoeServer.Kernels.Generation;
using MoeServer.Kernels.Sampling;
using MoeServer.Kernels.Tokenization;

namespace MoeServer.Tools;

internal static class GenerateCommand
{
    private static string OptionName(string field) => field switch
    {
        "TopP" => "top-p",
        "TopK" => "top-k",
        "MinP" => "min-p",
        "MaxTokens" => "max-tokens",
        _ => field.ToLowerInvariant(),
    };

    public static int Run(string[] args)
    {
        var cl = new CommandLine(args, new HashSet<string> { "chat" });
        string dir = ModelLocator.Resolve(cl.String("model"));
        string prompt = cl.Required("prompt");
        bool chat = cl.Flag("chat");
        string? templateOverride = cl.String("chat-template");
        var sampling = new SamplingParams
        {
            MaxTokens = cl.Int("max-tokens", 64),
            Temperature = (float)cl.Double("temperature", 0),
            TopP = (float)cl.Double("top-p", 1),
            TopK = cl.Int("top-k", 0) is var k and > 0 ? k : null,
            MinP = (float)cl.Double("min-p", 0),
            Seed = cl.String("seed") is null ? null : cl.Long("seed", 0),
        };
        var precision = ModelLocator.ParsePrecision(cl.String("precision"));
        cl.RejectUnknown();
        var errors = sampling.GetValidationErrors();
        if (errors.Count > 0)
            throw new UsageException(string.Join("; ", errors.Select(e => $"--{OptionName(e.Field)}: {e.Message}")));

        var tokenizer = ModelTokenizer.Load(dir);
        int[] ids;
        if (chat || templateOverride is not null)
            ids = tokenizer.Encode(ModelChatTemplate.Load(dir, templateOverride).Render([new ChatMessage("user", prompt)], addGenerationPrompt: true));
        else
            ids = tokenizer.EncodePrompt(prompt); // bos first when the model's tokenizer asks for it (GGUF add_bos_token)
        using var model = ModelLocator.Load(dir, precision);
        var generator = new TextGenerator(model, tokenizer);
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var result = generator.Generate(ids, sampling, chunk =>
        {
            Console.Out.Write(chunk.Text);
            Console.Out.Flush();
        });
        Console.Out.WriteLine();
        Console.Error.WriteLine($"[{result.PromptTokens} prompt tokens, {result.CompletionTokens} generated, finish_reason={result.FinishReason.ToString().ToLowerInvariant()}, {result.CompletionTokens / sw.Elapsed.TotalSeconds:F1} tokens/s]");
        return 0;
    }
}
