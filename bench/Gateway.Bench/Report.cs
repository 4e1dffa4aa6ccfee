using System.Text;
using System.Text.Json;
using MoeServer.Bench.Common;
using MoeServer.Kernels.Native;
using ScottPlot;

namespace MoeServer.Bench.Gateway;

/// <summary>The run's results: a table on stdout, markdown + JSON + a PNG in bench/results/.</summary>
internal sealed record Report(DateTime Date, bool Quick, MachineLimits Machine, Latency LoopbackRoundTripMs, string Preset, string ModelDir,
    string Workload, int MaxTokens, double WarmUpSeconds, double MeasuredSeconds, int OverheadRounds, List<LoadResult> Load,
    OverheadResult Overhead, List<ProfileSegment> Profile)
{
    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        DictionaryKeyPolicy = null,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    private static string FirstLine(string s)
    {
        var line = s.Split('\n', 2)[0].Trim().Replace("`", "'");
        return line.Length > 240 ? line[..240] + "..." : line;
    }

    private static string F(double v, int digits = 1) => double.IsFinite(v) ? v.ToString("F" + digits) : "n/a";

    private string LoadTable() => MarkdownTable.Render(
        ["concurrency", "tokens/s", "requests/s", "TTFT p50 ms", "TTFT p99 ms", "TPOT p50 ms", "TPOT p99 ms", "ITL p50 ms", "ITL p99 ms", "measured requests", "all requests", "errors"],
        Load.Select(r => (IReadOnlyList<string>)
        [
            r.Concurrency.ToString(), F(r.TokensPerSecond), F(r.RequestsPerSecond, 2), F(r.Ttft.P50), F(r.Ttft.P99), F(r.Tpot.P50, 2), F(r.Tpot.P99, 2),
            F(r.Itl.P50, 2), F(r.Itl.P99, 2),
            r.Measured.ToString(), r.Total.ToString(),
            r.Errors == 0 ? "0" : r.Errors + " (" + string.Join(", ", r.ErrorsByKind.Where(kv => kv.Value > 0).Select(kv => $"{kv.Key} {kv.Value}")) + ")",
        ]));

    private string OverheadTable()
    {
        var o = Overhead;
        return MarkdownTable.Render(["path (concurrency 1)", "TTFT p50 ms", "TTFT p99 ms", "TPOT p50 ms", "TPOT p99 ms", "ITL p50 ms", "ITL p99 ms", "requests", "errors"],
        [
            ["HTTP + SSE (gateway)", F(o.HttpTtft.P50, 2), F(o.HttpTtft.P99, 2), F(o.HttpTpot.P50, 3), F(o.HttpTpot.P99, 3), F(o.HttpItl.P50, 3), F(o.HttpItl.P99, 3),
                o.HttpTtft.Samples.ToString(), o.HttpErrors.ToString()],
            ["in-process (MoeEngine.SubmitAsync)", F(o.InProcTtft.P50, 2), F(o.InProcTtft.P99, 2), F(o.InProcTpot.P50, 3), F(o.InProcTpot.P99, 3), F(o.InProcItl.P50, 3), F(o.InProcItl.P99, 3),
                o.InProcTtft.Samples.ToString(), o.InProcErrors.ToString()],
            ["**gateway overhead** (difference)", "**" + F(o.OverheadP50, 2) + "**", F(o.OverheadP99, 2), F(o.HttpTpot.P50 - o.InProcTpot.P50, 3), F(o.HttpTpot.P99 - o.InProcTpot.P99, 3),
                F(o.HttpItl.P50 - o.InProcItl.P50, 3), F(o.HttpItl.P99 - o.InProcItl.P99, 3), "", ""],
        ]);
    }

    private string ProfileTable() => MarkdownTable.Render(["path", "part of time-to-first-token", "p50 ms", "p90 ms", "mean ms", "samples"],
        Profile.Select(s => (IReadOnlyList<string>)[s.Path, s.Segment, F(s.P50, 3), F(s.P90, 3), F(s.Mean, 3), s.Samples.ToString()]));

    private string MachineLine() =>
        $"{Machine.CpuModel}, {Machine.Cores} cores; read bandwidth {Machine.ReadGBps:F1} GB/s, bf16 matmul {Machine.Bf16MatmulGflops:F0} GFLOP/s, " +
        $"fp32 matmul {Machine.Fp32MatmulGflops:F0} GFLOP/s, loopback TCP round trip p50 {LoopbackRoundTripMs.P50 * 1000:F0} µs / p99 " +
        $"{LoopbackRoundTripMs.P99 * 1000:F0} µs (all measured in this run)";

    private string TargetLine() =>
        $"Target (gateway overhead on time-to-first-token under {OverheadResult.TargetP50Ms:F0} ms at p50): " +
        $"**{(Overhead.TargetMet ? "met" : "not met")}**: HTTP TTFT p50 {F(Overhead.HttpTtft.P50, 2)} ms - in-process p50 " +
        $"{F(Overhead.InProcTtft.P50, 2)} ms = {F(Overhead.OverheadP50, 2)} ms (median of the paired differences {F(Overhead.PairedMedian, 2)} ms).";

    /// <summary>The gateway's own parts of TTFT from the profile's means (which add up).</summary>
    private string ProfileSummary()
    {
        double Mean(string path, string prefix) =>
            Profile.FirstOrDefault(p => p.Path == path && p.Segment.StartsWith(prefix, StringComparison.Ordinal))?.Mean ?? double.NaN;
        double request = Mean("HTTP", "client send ->") + Mean("HTTP", "hosting start ->") + Mean("HTTP", "endpoint ->");
        double delivery = Mean("HTTP", "step ends ->") - Mean("in-process", "step ends ->");
        double write = Mean("HTTP", "the flush") + Mean("HTTP", "flush done ->");
        double total = Mean("HTTP", "TTFT") - Mean("in-process", "TTFT");
        return $"Summary (means): the request side (client send, Kestrel, middleware, body read, JSON, tokenize, plan) takes {F(request, 3)} ms; " +
               $"getting the first token from the engine into an SSE event takes {F(delivery, 3)} ms longer than handing it to an in-process " +
               $"reader; writing it and the client reading it take {F(write, 3)} ms. HTTP TTFT - in-process TTFT in this pass: {F(total, 3)} ms " +
               "(the engine's parts, admission and the prefill step, are the same on both paths).";
    }

    public void Print()
    {
        Console.WriteLine();
        Console.WriteLine($"Gateway benchmark ({(Quick ? "quick" : "full")} run, {Preset} preset). Machine: {MachineLine()}.");
        Console.WriteLine();
        Console.WriteLine($"Load: N streaming clients back to back, {MeasuredSeconds:0.#} s measured after {WarmUpSeconds:0.#} s warm-up");
        Console.Write(LoadTable());
        Console.WriteLine();
        Console.WriteLine($"Gateway overhead: {OverheadRounds} interleaved rounds at concurrency 1");
        Console.Write(OverheadTable());
        Console.WriteLine(TargetLine().Replace("**", ""));
        Console.WriteLine();
        Console.WriteLine("Where time-to-first-token goes (server-side timestamps, sequential requests)");
        Console.Write(ProfileTable());
        Console.WriteLine(ProfileSummary());
        Console.WriteLine();
    }

    public void Write(string mdPath)
    {
        string dir = Path.GetDirectoryName(Path.GetFullPath(mdPath))!;
        Directory.CreateDirectory(dir);
        string png = Path.ChangeExtension(mdPath, ".png");
        Plot(png);

        var sb = new StringBuilder();
        sb.AppendLine("# Gateway benchmark: the OpenAI-compatible HTTP API under load, and what the gateway adds");
        sb.AppendLine();
        sb.AppendLine($"Date: {Date:yyyy-MM-dd HH:mm} UTC. Mode: {(Quick ? "quick" : "full")}. Machine: {MachineLine()}.");
        sb.AppendLine();
        sb.AppendLine($"Workload: {Workload}. The gateway (`GatewayApp`: Kestrel, the OpenAI endpoints, the single-node engine) runs in the " +
                      "benchmark's process on http://127.0.0.1 (any free port); the clients are raw `HttpClient`s (HTTP/1.1 keep-alive, one " +
                      "connection each) that parse the SSE stream themselves and timestamp every `data:` event as it arrives. " +
                      "TTFT = request sent to the first event with text; TPOT = (last text event - first) / (tokens - 1) per request " +
                      "(vLLM's definition); ITL = gap between consecutive events with text as the client reads them. Events often " +
                      "arrive several to a read (gap 0): on 2 cores the engine's steps (compute thread + spinning kernel workers) hold " +
                      "both cores, and the gateway's and client's threads catch up between steps, so ITL p50 can be near 0 while TPOT " +
                      "gives the per-token pace. " +
                      "Client and server share the machine's cores.");
        sb.AppendLine();
        sb.AppendLine("## Load: N concurrent streaming clients");
        sb.AppendLine();
        sb.AppendLine($"Each client sends requests back to back (prompts in turn). Per level: {WarmUpSeconds:0.#} s warm-up, then a " +
                      $"{MeasuredSeconds:0.#} s window (and before the first level, {WarmUpSeconds:0.#} s at each of concurrency 1, 8, 64 and 1 again: on 2 busy cores the JIT " +
                      "needs tens of seconds to get Kestrel, Akka and the engine through their tiers, and a level measured earlier runs slower). tokens/s counts the tokens whose events arrived inside the window; requests/s the " +
                      "requests that completed in it; latencies are of the requests started in it (measured requests). Errors are " +
                      "counted over all requests of the level: non-200 responses (HttpStatus), error events (ErrorEvent), streams " +
                      "without `data: [DONE]` or a finish reason (MissingDone), connection failures (Exception).");
        sb.AppendLine();
        sb.Append(LoadTable());
        sb.AppendLine();
        foreach (var r in Load.Where(r => r.FirstError is not null))
            sb.AppendLine($"Error at concurrency {r.Concurrency} (first of {r.Errors}): `{FirstLine(r.FirstError!)}`").AppendLine();
        double epT = Load.Select(l => l.TextEventsPerToken).Where(double.IsFinite).DefaultIfEmpty(double.NaN).Average();
        sb.AppendLine($"SSE events with text per generated token: {F(epT, 3)} (the gateway holds back text that ends in a partial " +
                      "UTF-8 character, so with random weights some tokens arrive merged with the next one).");
        sb.AppendLine();
        sb.AppendLine("## Gateway overhead (concurrency 1, HTTP vs in-process, interleaved)");
        sb.AppendLine();
        sb.AppendLine($"{OverheadRounds} rounds on the running server after warm-up: each round sends one prompt over HTTP and hands the " +
                      "same tokenized prompt with the same sampling parameters straight to `MoeEngine.SubmitAsync` (what the gateway's " +
                      "planner builds from the body), alternating which goes first, so machine noise (other processes ran during the " +
                      "run) hits both alike. In-process TTFT is SubmitAsync to the first chunk with text; in-process ITL the gaps between " +
                      $"chunks with text (the same definition as over HTTP). Pairs whose token counts differed: {Overhead.TokenMismatches}.");
        sb.AppendLine();
        sb.Append(OverheadTable());
        sb.AppendLine();
        sb.AppendLine(TargetLine());
        sb.AppendLine();
        if (Overhead.FirstError is { } oe) sb.AppendLine($"Error in the overhead rounds (first): `{FirstLine(oe)}`").AppendLine();
        sb.AppendLine("## Where time-to-first-token goes");
        sb.AppendLine();
        sb.AppendLine("A last pass of sequential requests (HTTP and in-process alternating) with server-side timestamps, taken without " +
                      "changing the gateway: ASP.NET Core hosting's `HttpRequestIn` diagnostic event (Kestrel has parsed the request), a " +
                      "middleware appended after the gateway's own (right before the endpoint), the `moe.admit` activity of " +
                      "`GenerationRunner.StartAsync` and the `moe.step` activity of the prefill step (its forward pass; sampling and " +
                      "delivery come after it), and the response body wrapped to time its flushes (the one that sent the first text event is used). Client and server share the " +
                      "process, so all stamps are on one clock. The hooks themselves cost a little (activities are created only while " +
                      "they listen), so this pass's totals sit slightly above the overhead table's. Percentiles of the parts do not add " +
                      "up; means do.");
        sb.AppendLine();
        sb.Append(ProfileTable());
        sb.AppendLine();
        sb.AppendLine(ProfileSummary());
        sb.AppendLine();
        sb.AppendLine($"![throughput, TTFT and ITL vs concurrency; HTTP vs in-process]({Path.GetFileName(png)})");
        sb.AppendLine();
        sb.AppendLine("Run: `dotnet run --project bench/Gateway.Bench -c Release -- [--quick] [--preset small|tiny|bench] " +
                      "[--concurrency 1,8,32,64] [--max-tokens 32] [--seconds 25] [--rounds 1000] [--chat]`.");
        File.WriteAllText(mdPath, sb.ToString());

        var json = JsonSerializer.Serialize(new
        {
            date = Date,
            quick = Quick,
            machine = Machine,
            loopbackRoundTripMs = LoopbackRoundTripMs,
            preset = Preset,
            workload = Workload,
            maxTokens = MaxTokens,
            warmUpSeconds = WarmUpSeconds,
            measuredSeconds = MeasuredSeconds,
            load = Load,
            overhead = new
            {
                Overhead.Rounds,
                Overhead.HttpTtft,
                Overhead.InProcTtft,
                Overhead.HttpItl,
                Overhead.InProcItl,
                Overhead.HttpTpot,
                Overhead.InProcTpot,
                Overhead.OverheadP50,
                Overhead.OverheadP99,
                Overhead.PairedMedian,
                Overhead.PairedMean,
                Overhead.HttpErrors,
                Overhead.InProcErrors,
                Overhead.TokenMismatches,
                Overhead.FirstError,
                targetP50Ms = OverheadResult.TargetP50Ms,
                targetMet = Overhead.TargetMet,
            },
            profile = Profile,
        }, JsonOptions);
        File.WriteAllText(Path.ChangeExtension(mdPath, ".json"), json);
    }

    /// <summary>Four panels: throughput, TTFT and ITL vs concurrency, and HTTP vs in-process at concurrency 1.</summary>
    private void Plot(string png)
    {
        var mp = new Multiplot();
        mp.AddPlots(4);
        mp.Layout = new ScottPlot.MultiplotLayouts.Grid(2, 2);
        string? font = BenchPlot.FontName; // the repository's plots share one font lookup
        double[] x = Load.Select(l => Math.Log10(l.Concurrency)).ToArray();
        var ticks = new ScottPlot.TickGenerators.NumericManual();
        foreach (var l in Load) ticks.AddMajor(Math.Log10(l.Concurrency), l.Concurrency.ToString());

        Plot Panel(int i, string title, string yLabel)
        {
            var p = mp.GetPlot(i);
            if (font is not null) p.Font.Set(font);
            p.Add.Palette = new ScottPlot.Palettes.Category10();
            p.Title(title, size: 15);
            p.YLabel(yLabel, size: 13);
            p.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic { TickDensity = 0.5 };
            return p;
        }

        void Lines(Plot p, params (string Name, double[] Y)[] series)
        {
            MarkerShape[] shapes = [MarkerShape.FilledCircle, MarkerShape.FilledSquare, MarkerShape.FilledTriangleUp, MarkerShape.FilledDiamond];
            for (int s = 0; s < series.Length; s++)
            {
                var sc = p.Add.Scatter(x, series[s].Y, p.Add.Palette.GetColor(s));
                if (series.Length > 1) sc.LegendText = series[s].Name;
                sc.LineWidth = 2;
                sc.MarkerSize = 7;
                sc.MarkerShape = shapes[s % shapes.Length];
            }
            p.Axes.Bottom.TickGenerator = ticks;
            p.XLabel("concurrent streaming clients (log scale)", size: 13);
            p.Axes.Margins(left: 0.08, right: 0.08, bottom: 0, top: 0.12);
            p.Axes.AutoScale();
            var lim = p.Axes.GetLimits();
            if (lim.Bottom > 0) p.Axes.SetLimitsY(0, lim.Top);
            if (series.Length > 1) p.ShowLegend(Alignment.UpperLeft);
        }

        Lines(Panel(0, $"Throughput over HTTP ({Preset} preset)", "generated tokens/s"),
            ("tokens/s", Load.Select(l => l.TokensPerSecond).ToArray()));
        Lines(Panel(1, "Time to first token over HTTP", "ms"),
            ("TTFT p50", Load.Select(l => l.Ttft.P50).ToArray()), ("TTFT p99", Load.Select(l => l.Ttft.P99).ToArray()));
        Lines(Panel(2, "Per-token latency over HTTP", "ms"),
            ("TPOT p50", Load.Select(l => l.Tpot.P50).ToArray()), ("TPOT p99", Load.Select(l => l.Tpot.P99).ToArray()),
            ("ITL p50", Load.Select(l => l.Itl.P50).ToArray()), ("ITL p99", Load.Select(l => l.Itl.P99).ToArray()));

        var bars = Panel(3, $"Concurrency 1: HTTP vs in-process (overhead p50 {F(Overhead.OverheadP50, 2)} ms)", "ms");
        string[] groups = ["TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99", "ITL p99"];
        var series = new (string Name, double[] V)[]
        {
            ("HTTP + SSE", [Overhead.HttpTtft.P50, Overhead.HttpTtft.P99, Overhead.HttpTpot.P50, Overhead.HttpTpot.P99, Overhead.HttpItl.P99]),
            ("in-process", [Overhead.InProcTtft.P50, Overhead.InProcTtft.P99, Overhead.InProcTpot.P50, Overhead.InProcTpot.P99, Overhead.InProcItl.P99]),
        };
        var all = new List<Bar>();
        for (int s = 0; s < series.Length; s++)
        {
            var color = bars.Add.Palette.GetColor(s);
            for (int g = 0; g < groups.Length; g++)
            {
                double v = double.IsFinite(series[s].V[g]) ? series[s].V[g] : 0;
                all.Add(new Bar { Position = g - 0.2 + 0.4 * s, Value = v, Size = 0.37, FillColor = color, LineWidth = 0, Label = BenchPlot.FormatNumber(v) });
            }
            bars.Legend.ManualItems.Add(new LegendItem { LabelText = series[s].Name, FillColor = color });
        }
        var bp = bars.Add.Bars(all);
        bp.ValueLabelStyle.FontSize = 11;
        bars.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(groups.Select((g, i) => new Tick(i, g)).ToArray());
        bars.Axes.Bottom.MajorTickStyle.Length = 0;
        bars.XLabel("both paths on the same server, interleaved", size: 13);
        bars.HideGrid();
        bars.Grid.YAxisStyle.IsVisible = true;
        double top = all.Count == 0 ? 1 : all.Max(b => b.Value);
        bars.Axes.SetLimits(-0.6, groups.Length - 0.4, 0, top <= 0 ? 1 : top * 1.2);
        bars.ShowLegend(Alignment.UpperLeft);

        mp.SavePng(png, 1400, 1000);
    }
}
