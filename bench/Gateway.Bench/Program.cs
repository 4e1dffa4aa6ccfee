using MoeServer.Bench.Common;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using MoeServer.Actors.Generation;
using MoeServer.Actors.Hosting;
using MoeServer.Bench.Gateway;
using MoeServer.Gateway;
using MoeServer.Gateway.OpenAi;
using MoeServer.Gateway.Serving;
using MoeServer.Kernels.Checkpoints;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Native;
using MoeServer.Kernels.Sampling;

// Gateway benchmark: a load generator for the OpenAI-compatible HTTP API. The gateway (GatewayApp: Kestrel + the
// single-node engine) runs in this process on 127.0.0.1; N streaming clients (raw HttpClient + SSE parsing) send
// completions back to back. Then, at concurrency 1, HTTP requests and direct MoeEngine.SubmitAsync calls alternate
// (same prompts, same server) to isolate what the gateway adds to time-to-first-token, and a last pass with
// server-side timestamps splits that overhead into its parts.
// Usage: dotnet run --project bench/Gateway.Bench -c Release -- [--quick] [--preset small|tiny|bench] [--model DIR]
//        [--concurrency 1,8,32,64] [--max-tokens 32] [--seconds 25] [--rounds 1000] [--chat] [--out FILE]
CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
bool quick = args.Contains("--quick");
bool chat = args.Contains("--chat");
string repo = FindRepoRoot();
string outFile = ArgValue("--out") ?? Path.Combine(repo, "bench", "results", "gateway.md");
string preset = ArgValue("--preset") ?? "small";
int[] concurrencies = (ArgValue("--concurrency") ?? "1,8,32,64").Split(',').Select(int.Parse).ToArray();
int maxTokens = int.Parse(ArgValue("--max-tokens") ?? "32", CultureInfo.InvariantCulture);
double measureSeconds = double.Parse(ArgValue("--seconds") ?? (quick ? "4" : "25"), CultureInfo.InvariantCulture);
double warmSeconds = quick ? 1.5 : 5;
int rounds = int.Parse(ArgValue("--rounds") ?? (quick ? "30" : "1000"), CultureInfo.InvariantCulture);
int warmRounds = quick ? 10 : 40;
int profileRequests = quick ? 20 : 200;
string[] promptTexts =
[
    "The king said",
    "Once upon a time there was",
    "The weather today is",
    "My favourite food is",
    "The quick brown fox",
    "Here is a short story about a dragon:",
    "The meaning of life is",
    "In the beginning the",
];
var clock = Stopwatch.StartNew();
void Progress(string line) => Console.WriteLine($"[{clock.Elapsed.TotalSeconds,6:F1}s] {line}");

Progress("measuring machine limits (read bandwidth, matmul rates, loopback TCP round trip)...");
var limits = MachineLimits.Measure();
var rtt = await Loopback.RoundTripAsync(quick ? 500 : 3000);
Progress($"  read {limits.ReadGBps:F1} GB/s, bf16 matmul {limits.Bf16MatmulGflops:F0} GFLOP/s, fp32 matmul {limits.Fp32MatmulGflops:F0} GFLOP/s, " +
         $"{limits.Cores} cores, loopback TCP round trip p50 {rtt.P50 * 1000:F0} us / p99 {rtt.P99 * 1000:F0} us");

string modelDir = ArgValue("--model") ?? EnsureCheckpoint(preset);
Progress($"starting the gateway in-process (model {modelDir})...");
var settings = MoeSettings.Load(NodeRole.All, $$"""
    moe.node { model = "{{modelDir.Replace("\\", "/")}}", cluster-port = 0 }
    akka.loglevel = WARNING
    """);
using var probe = new ServerProbe();
var app = GatewayApp.Create(settings, ["http://127.0.0.1:0"], m => Progress("  " + m), logging =>
{
    logging.AddSimpleConsole(o => o.SingleLine = true);
    logging.SetMinimumLevel(LogLevel.Warning);
});
app.Use((ctx, next) => probe.Middleware(ctx, next)); // a no-op unless the profile pass is running
await app.StartAsync();
var baseUri = new Uri(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First().TrimEnd('/') + "/");
var engine = app.Services.GetRequiredService<MoeNodeRuntime>().Engine ?? throw new InvalidOperationException("the engine did not start");
var served = app.Services.GetRequiredService<ServedModel>();
using var http = SseClient.NewHttpClient(baseUri);
await WaitReadyAsync(http, TimeSpan.FromMinutes(5));
Progress($"gateway ready at {baseUri}");

var cfg = engine.Config;
var eosBias = cfg.EosTokenIds.ToDictionary(id => id, _ => -100f); // no early stops: every request generates max_tokens
var bodies = promptTexts.Select(p => JsonSerializer.SerializeToUtf8Bytes(RequestBody(p))).ToArray();
var promptTokens = promptTexts.Select(p => chat
    ? served.EncodeChat([new ChatMessageDto { Role = "user", Content = p }], GenerationPlanner.SnakeCase)
    : served.Tokenizer.Encode(p)).ToArray();
var sse = new SseClient(http, new Uri(baseUri, chat ? "v1/chat/completions" : "v1/completions"));
string workload = $"{(chat ? "/v1/chat/completions (one user message)" : "/v1/completions")} with `stream: true` and " +
                  $"`stream_options.include_usage`, {promptTexts.Length} fixed short prompts ({promptTokens.Min(t => t.Length)}-" +
                  $"{promptTokens.Max(t => t.Length)} tokens), greedy (temperature 0, seed 1), max_tokens {maxTokens}, EOS banned with " +
                  $"logit_bias so every request generates {maxTokens} tokens; model: `{preset}` preset Mixtral ({cfg.NumLayers} layers, hidden " +
                  $"{cfg.HiddenSize}, {cfg.NumExperts} experts top-{cfg.NumExpertsPerToken}, vocab {cfg.VocabSize}), bf16 weights, random weights, " +
                  "one node (role all), default scheduler settings";

// 1. Load: N clients back to back. First a warm-up through the batch sizes: on 2 busy cores the JIT takes tens of
// seconds to get Kestrel, Akka and the engine through their tiers, and a level measured before that runs slower.
var loads = new List<LoadResult>();
int requestSeq = 0;
int[] warmLevels = [1, 8, 64, 1];
Progress($"warm-up: {warmSeconds:F1} s at each of concurrency {string.Join(", ", warmLevels)}...");
foreach (int n in warmLevels) await RunLoadAsync(n, warmSeconds, 0);
foreach (int n in concurrencies)
{
    Progress($"load c={n}: {warmSeconds:F1} s warm-up, then {measureSeconds:F1} s measured...");
    var r = await RunLoadAsync(n, warmSeconds, measureSeconds);
    loads.Add(r);
    Progress($"  c={n}: {r.TokensPerSecond:F1} tokens/s, {r.RequestsPerSecond:F2} requests/s, TTFT p50 {r.Ttft.P50:F1} / p99 {r.Ttft.P99:F1} ms, " +
             $"TPOT p50 {r.Tpot.P50:F2} / p99 {r.Tpot.P99:F2} ms, ITL p50 {r.Itl.P50:F2} / p99 {r.Itl.P99:F2} ms, {r.Measured} measured requests, {r.Errors} errors");
    if (r.FirstError is not null) Progress($"  first error: {r.FirstError}");
}

// 2. Gateway overhead: HTTP and in-process alternate at concurrency 1 (same prompts, same server, same moment).
Progress($"overhead: {warmRounds} warm-up rounds, then {rounds} rounds of one HTTP request + one direct engine request (order alternating)...");
var overhead = await RunOverheadAsync();
Progress($"  TTFT p50 HTTP {overhead.HttpTtft.P50:F2} ms vs in-process {overhead.InProcTtft.P50:F2} ms: overhead {overhead.OverheadP50:F2} ms " +
         $"(p99 {overhead.HttpTtft.P99:F2} vs {overhead.InProcTtft.P99:F2}: {overhead.OverheadP99:F2} ms; paired median {overhead.PairedMedian:F2} ms)");

// 3. Where the overhead goes: server-side timestamps (activities, hosting diagnostics, a timed response body).
Progress($"profile: {profileRequests} HTTP + {profileRequests} in-process requests with server-side timestamps...");
var profile = await RunProfileAsync();
foreach (var s in profile) Progress($"  {s.Path,-10} {s.Segment,-58} p50 {s.P50,7:F3} ms  p90 {s.P90,7:F3} ms");

await app.StopAsync();
await app.DisposeAsync();

var report = new Report(DateTime.UtcNow, quick, limits, rtt, preset, modelDir, workload, maxTokens, warmSeconds, measureSeconds,
    rounds, loads, overhead, profile);
report.Print();
report.Write(outFile);
Progress($"wrote {outFile}, {Path.ChangeExtension(outFile, ".json")}, {Path.ChangeExtension(outFile, ".png")}");
return 0;

object RequestBody(string prompt)
{
    var body = new Dictionary<string, object>
    {
        ["max_tokens"] = maxTokens,
        ["temperature"] = 0,
        ["seed"] = 1,
        ["stream"] = true,
        ["stream_options"] = new Dictionary<string, object> { ["include_usage"] = true },
        ["logit_bias"] = cfg.EosTokenIds.ToDictionary(id => id.ToString(CultureInfo.InvariantCulture), _ => -100),
    };
    if (chat) body["messages"] = new[] { new Dictionary<string, string> { ["role"] = "user", ["content"] = prompt } };
    else body["prompt"] = prompt;
    return body;
}

// What GenerationPlanner builds from that body, handed to the engine directly.
GenerationRequest DirectRequest(int prompt, string id) => new(id, promptTokens[prompt], new SamplingParams
{
    Temperature = 0f,
    TopP = 1f,
    MinP = 0f,
    RepetitionPenalty = 1f,
    LogitBias = eosBias,
    MaxTokens = maxTokens,
    Seed = 1,
});

string NextId(string tag) => $"bench-{tag}-{Interlocked.Increment(ref requestSeq)}";

async Task<LoadResult> RunLoadAsync(int n, double warm, double measure)
{
    long t0 = Stopwatch.GetTimestamp();
    long windowStart = t0 + (long)(warm * Stopwatch.Frequency);
    long windowEnd = windowStart + (long)(Math.Max(measure, 0.001) * Stopwatch.Frequency);
    var perClient = Enumerable.Range(0, n).Select(_ => new List<RequestTrace>()).ToArray();
    int finished = 0, failed = 0;
    using var stopProgress = new CancellationTokenSource();
    var progress = Task.Run(async () =>
    {
        while (!stopProgress.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(TimeSpan.FromSeconds(quick ? 2 : 5), stopProgress.Token);
            }
            catch (OperationCanceledException)
            {
                break;
            }
            long now = Stopwatch.GetTimestamp();
            string phase = now < windowStart ? "warm-up" : now < windowEnd ? "measuring" : "draining";
            Progress($"    c={n} {phase}: {Volatile.Read(ref finished)} requests done, {Volatile.Read(ref failed)} failed");
        }
    });
    var clients = Enumerable.Range(0, n).Select(async i =>
    {
        await Task.Yield();
        for (int k = 0; Stopwatch.GetTimestamp() < windowEnd; k++)
        {
            var t = await sse.RunAsync(bodies[(i + k) % bodies.Length], NextId($"c{n}")).ConfigureAwait(false);
            perClient[i].Add(t);
            Interlocked.Increment(ref finished);
            if (!t.Ok) Interlocked.Increment(ref failed);
        }
    }).ToArray();
    await Task.WhenAll(clients);
    await stopProgress.CancelAsync();
    await progress;
    return LoadResult.From(n, perClient.SelectMany(c => c).ToList(), windowStart, windowEnd);
}

async Task<OverheadResult> RunOverheadAsync()
{
    var httpTraces = new List<RequestTrace>();
    var directTraces = new List<RequestTrace>();
    for (int r = -warmRounds; r < rounds; r++)
    {
        int p = ((r % promptTexts.Length) + promptTexts.Length) % promptTexts.Length;
        RequestTrace h, d;
        if ((r & 1) == 0)
        {
            h = await sse.RunAsync(bodies[p], NextId("http"));
            d = await InProcessClient.RunAsync(engine, DirectRequest(p, NextId("direct")));
        }
        else
        {
            d = await InProcessClient.RunAsync(engine, DirectRequest(p, NextId("direct")));
            h = await sse.RunAsync(bodies[p], NextId("http"));
        }
        if (r < 0) continue;
        httpTraces.Add(h);
        directTraces.Add(d);
        if ((r + 1) % Math.Max(1, rounds / 5) == 0) Progress($"    overhead round {r + 1}/{rounds}");
    }
    return OverheadResult.From(httpTraces, directTraces, maxTokens);
}

async Task<List<ProfileSegment>> RunProfileAsync()
{
    probe.Start();
    try
    {
        var http = new List<(ProbeMarks M, RequestTrace T)>();
        var direct = new List<(ProbeMarks M, RequestTrace T)>();
        for (int r = -10; r < profileRequests; r++)
        {
            int p = ((r % promptTexts.Length) + promptTexts.Length) % promptTexts.Length;
            string hid = NextId("probe-http"), did = NextId("probe-direct");
            var hm = probe.Expect(hid);
            var dm = probe.Expect(did);
            var h = await sse.RunAsync(bodies[p], hid);
            var d = await InProcessClient.RunAsync(engine, DirectRequest(p, did));
            if (r < 0 || !h.Ok || !d.Ok) continue;
            http.Add((hm, h));
            direct.Add((dm, d));
        }
        return ProfileSegment.From(http, direct);
    }
    finally
    {
        probe.Stop();
    }
}

async Task WaitReadyAsync(HttpClient client, TimeSpan timeout)
{
    var deadline = Stopwatch.StartNew();
    while (true)
    {
        try
        {
            using var resp = await client.GetAsync("ready");
            if (resp.IsSuccessStatusCode) return;
        }
        catch (HttpRequestException)
        {
            // not listening yet
        }
        if (deadline.Elapsed > timeout) throw new TimeoutException("the gateway did not become ready");
        await Task.Delay(200);
    }
}

string EnsureCheckpoint(string name)
{
    var p = CheckpointPresets.Parse(name);
    string dir = Path.Combine(repo, "bench", ".cache", $"{name}-mixtral");
    if (!File.Exists(Path.Combine(dir, "config.json")))
    {
        Progress($"creating the {name} checkpoint in {dir} (once)...");
        CheckpointFactory.Create(CheckpointPresets.Config(ModelArchitecture.Mixtral, p), dir, new GeneratorOptions { Seed = 1 });
    }
    return dir;
}

string? ArgValue(string name) => BenchEnvironment.ArgValue(args, name);

static string FindRepoRoot() => BenchEnvironment.RepoRoot();
