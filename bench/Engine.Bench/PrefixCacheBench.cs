using System.Diagnostics;
using System.Globalization;
using System.Text;
using MoeServer.Actors.Generation;
using MoeServer.Actors.Hosting;
using MoeServer.Bench.Common;
using MoeServer.Kernels.Sampling;

namespace MoeServer.Bench.Engine;

/// <summary>
/// Time to first token of requests that share a long system prompt, with the prefix cache off and on: two single
/// nodes side by side on the same checkpoint, requests sent one at a time and alternated between them.
/// </summary>
internal static class PrefixCacheBench
{
    public static async Task<string> RunAsync(string dir, string preset, bool quick)
    {
        int shared = quick ? 192 : 384, suffix = 16, requests = quick ? 4 : 8;
        const int MaxTokens = 4;
        MoeSettings Settings(string prefix) => MoeSettings.Load(NodeRole.All, $$"""
            moe.node { model = "{{dir}}", precision = bf16, cluster-port = 0 }
            moe.scheduler { max-batch-tokens = 512, prefill-chunk = 512, prefix-cache { {{prefix}} } }
            akka.loglevel = WARNING
            """);
        await using var off = await MoeNodeHost.StartAsync(Settings("max-bytes = 0"));
        await using var on = await MoeNodeHost.StartAsync(Settings("max-bytes = 512 MiB"));
        await off.WaitReadyAsync(TimeSpan.FromMinutes(5));
        await on.WaitReadyAsync(TimeSpan.FromMinutes(5));
        int vocab = off.Engine.Config.VocabSize;
        var rng = new Random(42);
        var system = Enumerable.Range(0, shared).Select(_ => rng.Next(100, vocab - 100)).ToArray();
        int[] Prompt() => [.. system, .. Enumerable.Range(0, suffix).Select(_ => rng.Next(100, vocab - 100))];

        var noEos = off.Engine.Config.EosTokenIds.ToDictionary(e => e, _ => -100f);
        async Task<double> TtftAsync(MoeEngine engine, int[] prompt)
        {
            long start = Stopwatch.GetTimestamp();
            var stream = await engine.SubmitAsync(new GenerationRequest($"prefix-{Guid.NewGuid():N}", prompt,
                SamplingParams.Greedy with { MaxTokens = MaxTokens, LogitBias = noEos }));
            double first = 0;
            await foreach (var c in stream)
                if (c.TokenId >= 0 && first == 0) first = Stopwatch.GetElapsedTime(start, c.ProducedAt).TotalMilliseconds;
            return first;
        }

        // warm-up (JIT, kernels for these shapes); the cache-on node also gets the system prompt cached
        await TtftAsync(off.Engine, Prompt());
        await TtftAsync(on.Engine, Prompt());
        var ttftOff = new List<double>();
        var ttftOn = new List<double>();
        var before = on.Engine.Gauges.PrefixCache;
        for (int i = 0; i < requests; i++)
        {
            var p = Prompt();
            if (i % 2 == 0)
            {
                ttftOff.Add(await TtftAsync(off.Engine, p));
                ttftOn.Add(await TtftAsync(on.Engine, p));
            }
            else
            {
                ttftOn.Add(await TtftAsync(on.Engine, p));
                ttftOff.Add(await TtftAsync(off.Engine, p));
            }
        }
        var after = on.Engine.Gauges.PrefixCache;
        var sb = new StringBuilder();
        sb.AppendLine($"## Prefix cache: requests sharing a {shared}-token system prompt ({preset} preset)");
        sb.AppendLine();
        sb.AppendLine($"{requests} requests one at a time, each the shared prompt plus {suffix} tokens of its own, {MaxTokens} tokens generated; two single nodes on the " +
                      "same checkpoint, one with `moe.scheduler.prefix-cache.max-bytes = 0` (off) and one with 512 MiB, requests alternated between them. " +
                      "TTFT: submission to the first token (engine clock).");
        sb.AppendLine();
        var t = new MarkdownTable("prefix cache", "TTFT p50 ms", "TTFT max ms", "prompt tokens prefilled per request", "vs off");
        double mOff = SampleStats.Median(ttftOff), mOn = SampleStats.Median(ttftOn);
        double reused = (after.TokensReused - before.TokensReused) / (double)requests;
        t.AddRow("off", mOff.ToString("F1", CultureInfo.InvariantCulture), ttftOff.Max().ToString("F1", CultureInfo.InvariantCulture),
            (shared + suffix).ToString(CultureInfo.InvariantCulture), "1.00x");
        t.AddRow("on", mOn.ToString("F1", CultureInfo.InvariantCulture), ttftOn.Max().ToString("F1", CultureInfo.InvariantCulture),
            (shared + suffix - reused).ToString("F0", CultureInfo.InvariantCulture), (mOn / mOff).ToString("F2", CultureInfo.InvariantCulture) + "x");
        sb.AppendLine(t.ToString());
        sb.AppendLine($"Prefix cache hits {after.Hits - before.Hits} of {after.Lookups - before.Lookups} lookups; {reused:F0} prompt tokens copied per request; {after.Bytes / (1024.0 * 1024):F1} MiB kept.");
        Console.WriteLine(sb.ToString());
        return sb.ToString();
    }
}
