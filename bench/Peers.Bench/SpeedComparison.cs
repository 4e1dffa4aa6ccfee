using System.Diagnostics;
using LLama;
using LLama.Common;
using LLama.Batched;
using LLama.Native;
using MoeServer.Actors.Generation;
using MoeServer.Actors.Hosting;
using MoeServer.Kernels.Checkpoints;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Formats;
using MoeServer.Kernels.Formats.Gguf;
using MoeServer.Kernels.Sampling;

namespace MoeServer.Bench.Peers;

/// <summary>One side's speed on the bench preset: prompt processing, decode at 1 stream, aggregate at N streams.</summary>
internal sealed record Speed(double PromptTokensPerSecond, double DecodeTokensPerSecond, IReadOnlyDictionary<int, double> AggregateTokensPerSecond);

/// <summary>llama.cpp's speed two ways: streams as LLamaSharp's <c>BatchedExecutor</c> conversations, and the same steps
/// as hand-built llama_batch calls (no wrapper overhead); the comparison takes the faster.</summary>
internal sealed record PeerSpeed(Speed Executor, Speed RawBatch)
{
    public double Prompt => Math.Max(Executor.PromptTokensPerSecond, RawBatch.PromptTokensPerSecond);
    public double Decode => Math.Max(Executor.DecodeTokensPerSecond, RawBatch.DecodeTokensPerSecond);
    public double Aggregate(int streams) => Math.Max(Executor.AggregateTokensPerSecond[streams], RawBatch.AggregateTokensPerSecond[streams]);
}

/// <summary>
/// The speed half of the peers bench: the `bench` preset (random bf16 weights, mixtral family) exported to GGUF bf16,
/// llama.cpp through LLamaSharp on it and our single-node engine on the checkpoint, same thread count, one after the
/// other in one run. llama.cpp's concurrent streams are one llama_batch with a sequence per stream each step (what
/// LLamaSharp's BatchedExecutor drives), measured both through the BatchedExecutor and as raw batches; ours are
/// concurrent requests through the engine (continuous batching).
/// </summary>
internal static class SpeedComparison
{
    public const int PromptTokens = 512;
    public const int StreamPrompt = 16;

    public static string PrepareCheckpoint(Action<string> log)
    {
        string dir = Path.Combine(Path.GetTempPath(), "peers-bench-mixtral");
        if (!File.Exists(Path.Combine(dir, "model.safetensors")))
        {
            log($"generating the bench preset (mixtral, bf16) in {dir}...");
            CheckpointFactory.Create(CheckpointPresets.Config(ModelArchitecture.Mixtral, CheckpointPreset.Bench), dir,
                new GeneratorOptions { Seed = 11, DType = TensorDType.BF16 });
        }
        return dir;
    }

    private static int[] Prompt(int length, int seed, int vocab)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, length).Select(_ => 100 + rng.Next(vocab - 200)).ToArray();
    }

    public static async Task<PeerSpeed> PeerAsync(string gguf, int vocab, int threads, int decodeTokens, int[] concurrency)
    {
        var p = new ModelParams(gguf)
        {
            ContextSize = (uint)Math.Max(PromptTokens + 16, concurrency.Max() * (StreamPrompt + decodeTokens + 8)),
            BatchSize = (uint)PromptTokens,
            UBatchSize = (uint)PromptTokens,
            SeqMax = (uint)concurrency.Max(),
            GpuLayerCount = 0,
            Threads = threads,
            BatchThreads = threads,
        };
        using var weights = LLamaWeights.LoadFromFile(p);
        using var ctx = weights.CreateContext(p);
        var h = ctx.NativeHandle;

        // prompt processing: 512 tokens in one batch, logits of the last only
        h.MemoryClear();
        var prompt = Prompt(PromptTokens, 1, vocab);
        var batch = new LLamaBatch();
        for (int i = 0; i < prompt.Length; i++) batch.Add((LLamaToken)prompt[i], i, LLamaSeqId.Zero, i == prompt.Length - 1);
        var sw = Stopwatch.StartNew();
        Check(h.Decode(batch));
        double pp = PromptTokens / sw.Elapsed.TotalSeconds;

        var aggregate = new Dictionary<int, double>();
        double decode = 0;
        foreach (int n in concurrency.Prepend(1).Distinct())
        {
            h.MemoryClear();
            sw.Restart();
            batch.Clear();
            for (int s = 0; s < n; s++)
            {
                var sp = Prompt(StreamPrompt, 100 + s, vocab);
                for (int i = 0; i < sp.Length; i++) batch.Add((LLamaToken)sp[i], i, (LLamaSeqId)s, i == sp.Length - 1);
            }
            Check(h.Decode(batch));
            var lastRows = Enumerable.Range(0, n).Select(s => (s + 1) * StreamPrompt - 1).ToArray();
            double firstTokenAt = 0;
            for (int step = 0; step < decodeTokens; step++)
            {
                var next = new int[n];
                for (int s = 0; s < n; s++) next[s] = ArgMax(h.GetLogitsIth(step == 0 ? lastRows[s] : s)[..vocab]);
                if (step == 0) firstTokenAt = sw.Elapsed.TotalSeconds;
                batch.Clear();
                for (int s = 0; s < n; s++) batch.Add((LLamaToken)next[s], StreamPrompt + step, (LLamaSeqId)s, true);
                Check(h.Decode(batch));
            }
            double total = sw.Elapsed.TotalSeconds;
            if (n == 1) decode = (decodeTokens - 1) / (total - firstTokenAt);
            aggregate[n] = n * decodeTokens / total;
        }
        var raw = new Speed(pp, decode, aggregate);

        // the same streams through LLamaSharp's BatchedExecutor: one conversation per stream, one Infer per step
        var viaExecutor = new Dictionary<int, double>();
        double executorDecode = 0;
        foreach (int n in concurrency.Prepend(1).Distinct())
        {
            using var executor = new BatchedExecutor(weights, p);
            var conversations = Enumerable.Range(0, n).Select(_ => executor.Create()).ToArray();
            sw.Restart();
            for (int s = 0; s < n; s++)
                conversations[s].Prompt(Prompt(StreamPrompt, 100 + s, vocab).Select(t => (LLamaToken)t).ToArray().AsSpan());
            await InferAll(executor);
            double firstTokenAt = 0;
            for (int step = 0; step < decodeTokens; step++)
            {
                foreach (var c in conversations) c.Prompt((LLamaToken)ArgMax(c.Sample()[..vocab]));
                if (step == 0) firstTokenAt = sw.Elapsed.TotalSeconds;
                await InferAll(executor);
            }
            double total = sw.Elapsed.TotalSeconds;
            if (n == 1) executorDecode = (decodeTokens - 1) / (total - firstTokenAt);
            viaExecutor[n] = n * decodeTokens / total;
            foreach (var c in conversations) c.Dispose();
        }
        return new PeerSpeed(new Speed(pp, executorDecode, viaExecutor), raw);
    }

    private static async Task InferAll(BatchedExecutor executor)
    {
        while (executor.BatchQueueCount > 0) Check(await executor.Infer());
    }

    public static async Task<Speed> OursAsync(string dir, int vocab, int decodeTokens, int[] concurrency)
    {
        await using var node = await MoeNodeHost.StartAsync(MoeSettings.Load(NodeRole.All, $$"""
            moe.node { model = "{{dir}}", precision = bf16, cluster-port = 0 }
            moe.scheduler { max-running-sequences = {{Math.Max(64, concurrency.Max())}}, max-batch-tokens = {{PromptTokens}}, prefill-chunk = {{PromptTokens}} }
            # the streams repeat their prompts at every level and llama.cpp's memory is cleared in between: no prefix reuse
            moe.scheduler.prefix-cache.max-bytes = 0
            akka.loglevel = WARNING
            """));
        await node.WaitReadyAsync(TimeSpan.FromMinutes(10));
        var engine = node.Engine;
        var noEos = engine.Config.EosTokenIds.ToDictionary(e => e, _ => -100f);

        // prompt processing: time to the first token of a 512-token prompt
        await RunAsync(engine, [Prompt(8, 5, vocab)], 2, noEos); // warm-up
        var sw = Stopwatch.StartNew();
        var ttft = await RunAsync(engine, [Prompt(PromptTokens, 1, vocab)], 1, noEos);
        double pp = PromptTokens / ttft[0].FirstTokenSeconds;

        var aggregate = new Dictionary<int, double>();
        double decode = 0;
        foreach (int n in concurrency.Prepend(1).Distinct())
        {
            sw.Restart();
            var runs = await RunAsync(engine, Enumerable.Range(0, n).Select(s => Prompt(StreamPrompt, 100 + s, vocab)).ToArray(), decodeTokens, noEos);
            double total = sw.Elapsed.TotalSeconds;
            if (n == 1) decode = (decodeTokens - 1) / (runs[0].LastTokenSeconds - runs[0].FirstTokenSeconds);
            aggregate[n] = runs.Sum(r => r.Tokens) / total;
        }
        return new Speed(pp, decode, aggregate);
    }

    private static async Task<(int Tokens, double FirstTokenSeconds, double LastTokenSeconds)[]> RunAsync(MoeEngine engine, int[][] prompts, int maxTokens,
        IReadOnlyDictionary<int, float> noEos)
    {
        long start = Stopwatch.GetTimestamp();
        var streams = await Task.WhenAll(prompts.Select((p, i) => engine.SubmitAsync(new GenerationRequest($"peer-{Guid.NewGuid():N}", p,
            SamplingParams.Greedy with { MaxTokens = maxTokens, LogitBias = noEos }))));
        return await Task.WhenAll(streams.Select(async s =>
        {
            int tokens = 0;
            long first = 0, last = 0;
            await foreach (var c in s)
            {
                if (c.TokenId < 0) continue;
                if (tokens++ == 0) first = c.ProducedAt;
                last = c.ProducedAt;
            }
            return (tokens, Stopwatch.GetElapsedTime(start, first).TotalSeconds, Stopwatch.GetElapsedTime(start, last).TotalSeconds);
        }));
    }

    private static int ArgMax(ReadOnlySpan<float> x)
    {
        int best = 0;
        for (int i = 1; i < x.Length; i++) if (x[i] > x[best]) best = i;
        return best;
    }

    private static void Check(DecodeResult r)
    {
        if (r != DecodeResult.Ok) throw new InvalidOperationException($"llama.cpp decode failed: {r}");
    }
}
