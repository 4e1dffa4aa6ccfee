using MoeServer.Gateway.Tests.Fuzzing;
using Xunit.Abstractions;

namespace MoeServer.Gateway.Tests;

/// <summary>
/// Leaks (issue 15): 2,000 requests against a real gateway process with the prefix cache on and small (so it evicts),
/// ending every way a client ends them: read to the end, cancelled, disconnected mid-stream, past their own deadline,
/// hub streams disposed and hub connections stopped. Afterwards /metrics is back at its idle baseline: nothing running
/// or waiting, no KV bytes, no generation actor, no open request stream or API request, the prefix cache within its
/// budget; and the server logged no exception. The bench (bench/Fuzz.Bench --leaks) runs 2 x 10,000 and watches RSS.
/// </summary>
public sealed class LeakTests(ITestOutputHelper output)
{
    public const long PrefixBudget = 2 << 20;

    /// <summary>A config file with a 2 MiB prefix cache that keeps prompts of 4 tokens and more.</summary>
    public static string SmallPrefixCacheConfig()
    {
        string path = Path.Combine(Path.GetTempPath(), $"moe-leak-{Environment.ProcessId}.hocon");
        File.WriteAllText(path, $"moe.scheduler.prefix-cache {{ max-bytes = {PrefixBudget}, min-tokens = 4 }}\n");
        return path;
    }

    [Fact]
    public async Task Cancelled_disconnected_timed_out_and_disposed_requests_leave_nothing_behind()
    {
        using var server = ServerProcess.Start("--model", TinyModel.Dir, "--config", SmallPrefixCacheConfig());
        var baseUri = await server.ListeningAsync(TimeSpan.FromSeconds(120));
        using var http = new HttpClient { BaseAddress = baseUri, Timeout = TimeSpan.FromSeconds(60) };
        await FuzzTests.WaitReadyAsync(http);
        var before = await MetricsBaseline.WaitForIdleAsync(http, TimeSpan.FromSeconds(10));

        var report = await new LeakDriver(baseUri, FuzzTests.Seed).RunAsync(requests: 2000, concurrency: 8, progress: output.WriteLine);
        output.WriteLine(report.Summary());
        foreach (var p in report.Problems.Take(20)) output.WriteLine(p);
        Assert.Empty(report.Problems);
        foreach (string ending in new[] { "whole", "streamed", "disconnected mid-stream", "hub stream disposed", "hub connection stopped" })
            Assert.True(report.Endings.GetValueOrDefault(ending) > 0, $"no request ended as '{ending}': {report.Summary()}");
        Assert.True(report.Endings.GetValueOrDefault("deadline 408") + report.Endings.GetValueOrDefault("deadline in stream") > 0, report.Summary());

        var after = await MetricsBaseline.WaitForIdleAsync(http, TimeSpan.FromSeconds(30), PrefixBudget);
        output.WriteLine(string.Join(", ", MetricsBaseline.IdleZero.Append("moe_prefix_cache_bytes").Select(n => $"{n} {before.GetValueOrDefault(n)} -> {after.GetValueOrDefault(n)}")));
        Assert.True(after.GetValueOrDefault("moe_prefix_cache_hits_total") > 0, "the prefix cache was never used");
        var exceptions = ServerLogScan.Exceptions(server.Output);
        Assert.True(exceptions.Count == 0, $"{exceptions.Count} exceptions in the server log; first: {(exceptions.Count > 0 ? exceptions[0] : null)}");
    }
}
