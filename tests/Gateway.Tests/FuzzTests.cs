using System.Net;
using System.Text;
using System.Text.Json;
using MoeServer.Gateway.Tests.Fuzzing;
using MoeServer.Kernels.Config;
using Xunit.Abstractions;

namespace MoeServer.Gateway.Tests;

/// <summary>
/// Seeded fuzzing of a real gateway process (issue 15): 2,000 mutated HTTP requests to every route and 500 hub calls
/// (JSON, MessagePack, raw frames), 4 at a time. Every answer must follow <see cref="FuzzOracle"/>'s rules, the server
/// must log no exception, and afterwards it serves a normal request and holds nothing (running, waiting, KV, streams).
/// A violation prints its seed and case index; <c>bench/Fuzz.Bench -- --seed S --from I --count 1</c> replays it.
/// </summary>
public sealed class FuzzTests(ITestOutputHelper output)
{
    public const ulong Seed = 20261203;

    public static ModelFacts Facts(string dir, string name)
    {
        var config = ModelConfig.Load(dir);
        return new ModelFacts(name, config.VocabSize, config.MaxPositionEmbeddings, config.NumLayers, config.NumExperts);
    }

    [Fact]
    public async Task Thousands_of_fuzzed_requests_get_valid_answers_and_no_exception_escapes()
    {
        using var server = ServerProcess.Start("--model", TinyModel.Dir);
        var baseUri = await server.ListeningAsync(TimeSpan.FromSeconds(120));
        using var http = new HttpClient { BaseAddress = baseUri, Timeout = TimeSpan.FromSeconds(60) };
        await WaitReadyAsync(http);

        var campaign = new FuzzCampaign(baseUri, Facts(TinyModel.Dir, new DirectoryInfo(TinyModel.Dir).Name), Seed);
        var report = await campaign.RunAsync(httpCases: 2000, hubCases: 500, concurrency: 4, progress: output.WriteLine);
        output.WriteLine(report.Summary());

        var violations = report.Violations.OrderBy(v => v.Index).ToList();
        var exceptions = ServerLogScan.Exceptions(server.Output);
        foreach (var v in violations.Take(30)) output.WriteLine(v.ToString());
        foreach (var e in exceptions.Take(30)) output.WriteLine("server log: " + e);
        Assert.True(violations.Count == 0, $"{violations.Count} answers broke the rules (seed {Seed}); first: {(violations.Count > 0 ? violations[0] : null)}");
        Assert.True(exceptions.Count == 0, $"{exceptions.Count} exceptions in the server log; first: {(exceptions.Count > 0 ? exceptions[0] : null)}");
        Assert.True(report.Outcomes.GetValueOrDefault("200") + report.Outcomes.GetValueOrDefault("200 stream") > 100,
            "too few valid completions: the fuzzer must also reach the engine (" + report.Summary() + ")");

        // The node still serves a normal request, and nothing the fuzz started is left behind.
        using var normal = await http.PostAsync("/v1/completions", new StringContent(
            """{"prompt":"In the beginning","max_tokens":4,"temperature":0}""", Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.OK, normal.StatusCode);
        var body = JsonDocument.Parse(await normal.Content.ReadAsStringAsync()).RootElement;
        Assert.Equal(4, body.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        await MetricsBaseline.WaitForIdleAsync(http, TimeSpan.FromSeconds(30));
    }

    internal static async Task WaitReadyAsync(HttpClient http)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(90);
        while (DateTime.UtcNow < deadline)
        {
            using var r = await http.GetAsync("/ready");
            if (r.IsSuccessStatusCode) return;
            await Task.Delay(200);
        }
        throw new TimeoutException("the server did not become ready");
    }
}
