using System.Globalization;
using System.Text;
using System.Text.Json;
using MoeServer.Bench.Common;
using MoeServer.Kernels.Native;

namespace MoeServer.Bench.Chaos;

/// <summary>The bench's results: tables on stdout, bench/results/chaos.md, the raw chaos.json and a timeline PNG per model.</summary>
internal sealed class Report(DateTime date, ChaosOptions options, MachineLimits machine, double ramGiB, List<(RunData Data, ModelResult Result, string Png)> runs)
{
    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = false,
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        IncludeFields = true,
        NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    private static string S(double seconds, int digits = 2) =>
        double.IsPositiveInfinity(seconds) ? "∞" : double.IsFinite(seconds) ? seconds.ToString("F" + digits, CultureInfo.InvariantCulture) + " s" : "n/a";

    private static string Ms(double seconds) => double.IsFinite(seconds) ? (seconds * 1000).ToString("F1", CultureInfo.InvariantCulture) + " ms" : S(seconds);

    private static string Met(bool ok) => ok ? "met" : "**not met**";

    public string MachineLine() =>
        $"{machine.CpuModel}, {machine.Cores} cores, {ramGiB:F0} GiB RAM; read bandwidth {machine.ReadGBps:F1} GB/s, fp32 matmul " +
        $"{machine.Fp32MatmulGflops:F0} GFLOP/s (measured in this run). Every node of the cluster shares these cores with the clients and the harness.";

    public string Markdown()
    {
        var sb = new StringBuilder();
        sb.AppendLine("# Chaos bench: expert nodes killed, hung and restarted under load");
        sb.AppendLine();
        sb.AppendLine($"{date:yyyy-MM-dd HH:mm} UTC; {MachineLine()}");
        sb.AppendLine();
        sb.AppendLine($"Workload: a loopback cluster of real server processes (1 gateway + {options.Experts} expert nodes, fixed seed node = the gateway, " +
                      "shipped hocon defaults except `--precision f32` and `moe.experts.wire-dtype = f32`), " +
                      $"{options.Clients} concurrent streaming clients (POST /v1/chat/completions, `stream: true`, `logprobs: true` for the token ids, " +
                      $"temperature 0, max_tokens {options.MaxTokens}, special tokens banned with logit_bias -100 so every answer runs to max_tokens, 16 fixed prompts) for {options.Minutes:F1} min per model. " +
                      $"Seeded schedule (seed {options.Seed} + the model's index): every 20-40 s it kills (SIGKILL) or hangs (SIGSTOP, SIGCONT 30 s later), in turn, or restarts " +
                      "(a new process on the same ports) an expert node, always leaving at least one expert node untouched. " +
                      "Every completed answer is compared, as token ids, with the model's direct loop in the bench process (f32, the same logit bias), up to the first " +
                      $"step whose top-2 logit margin is below {GreedyReference.NearTie:G1}. Mode: {(options.Quick ? "quick" : "full")}.");
        sb.AppendLine();
        sb.AppendLine("## Targets");
        sb.AppendLine();
        sb.Append(TargetsTable());
        sb.AppendLine();
        sb.AppendLine("## Requests and latency");
        sb.AppendLine();
        sb.Append(RequestsTable());
        sb.AppendLine();
        sb.AppendLine("A request is *during faults* when it ran at any time between a kill or hang and that fault's recovery (every stream that was running at the fault got its next token or ended). TTFT: send to the first token; TPOT: time per output token after the first.");
        foreach (var (d, r, png) in runs)
        {
            sb.AppendLine();
            sb.AppendLine($"## {d.Model}");
            sb.AppendLine();
            if (d.Aborted is not null) sb.AppendLine($"_Run ended early: {d.Aborted}._\n");
            sb.AppendLine($"Generated {r.TokensPerSecond:F1} tokens/s on average; {r.Checked} completed answers checked ({r.ComparedTokens} tokens compared).");
            if (d.AmbiguousByteStrings > 0) sb.AppendLine($"{d.AmbiguousByteStrings} byte strings name more than one token id: comparison stops at such a token.");
            sb.AppendLine();
            if (r.FailureKinds.Count > 0)
            {
                sb.AppendLine("Failures:");
                sb.AppendLine();
                sb.Append(MarkdownTable.Render(["failure", "requests"], r.FailureKinds.OrderByDescending(kv => kv.Value).Select(kv => (IReadOnlyList<string>)[kv.Key, kv.Value.ToString(CultureInfo.InvariantCulture)])));
                sb.AppendLine();
            }
            if (r.ChangedExamples.Count > 0)
            {
                sb.AppendLine("Changed outputs (first 5): " + string.Join("; ", r.ChangedExamples));
                sb.AppendLine();
            }
            sb.AppendLine("Faults and recovery (time from the fault to the next token of every stream running at it):");
            sb.AppendLine();
            sb.Append(MarkdownTable.Render(["at", "fault", "node", "streams running", "recovered", "never got another token", "max recovery"],
                r.Faults.Select(f => (IReadOnlyList<string>)[S(f.At, 1), f.Kind, f.Node, f.Running.ToString(CultureInfo.InvariantCulture),
                    f.Recovered.ToString(CultureInfo.InvariantCulture), f.NeverRecovered.ToString(CultureInfo.InvariantCulture), S(f.MaxSeconds)])));
            sb.AppendLine();
            sb.AppendLine("Schedule and node exits:");
            sb.AppendLine();
            sb.Append(MarkdownTable.Render(["at", "event", "node", "detail", "exit code"],
                d.Faults.Select(f => (IReadOnlyList<string>)[S(f.At, 1), f.Kind, $"{f.Node}#{f.Incarnation}", f.Detail, f.ExitCode?.ToString(CultureInfo.InvariantCulture) ?? ""])));
            sb.AppendLine();
            sb.AppendLine("Membership as the gateway saw it (GET /ops/cluster, polled every second):");
            sb.AppendLine();
            sb.Append(MarkdownTable.Render(["at", "node", "change"],
                d.Membership.Select(m => (IReadOnlyList<string>)[S(m.At, 1), m.Node, $"{m.From} -> {m.To}"])));
            sb.AppendLine();
            if (r.FalseDownings.Count > 0)
            {
                sb.AppendLine("False downings (no kill or hang of that node in the 3 minutes before): " +
                              string.Join("; ", r.FalseDownings.Select(f => $"{S(f.At, 1)} {f.Node} {f.Change}")));
                sb.AppendLine();
            }
            sb.AppendLine("Node memory (VmRSS; start: when the cluster was ready, or at a restart's first sample; end: at the end of the run or the last sample before the process exited):");
            sb.AppendLine();
            sb.Append(MarkdownTable.Render(["node", "started at", "RSS start", "RSS end", "exit code"],
                d.Rss.Select(n => (IReadOnlyList<string>)[$"{n.Node}#{n.Incarnation}", S(n.StartedAt, 1), Mb(n.StartKb), Mb(n.EndKb), n.ExitCode?.ToString(CultureInfo.InvariantCulture) ?? "running (killed at the end)"])));
            sb.AppendLine();
            var logLines = d.LogLines.Take(12).Select(l => $"- {S(l.At, 1)} {l.Node}#{l.Incarnation}: `{Trim(l.Line)}`").ToList();
            if (logLines.Count > 0)
            {
                sb.AppendLine($"Membership lines in the nodes' logs ({d.LogLines.Count}, first 12; all of them in chaos.json):");
                sb.AppendLine();
                foreach (var l in logLines) sb.AppendLine(l);
                sb.AppendLine();
            }
            sb.AppendLine($"![chaos timeline {d.Model}]({Path.GetFileName(png)})");
        }
        return sb.ToString();
    }

    private static string Trim(string line)
    {
        line = line.Replace("`", "'");
        return line.Length > 200 ? line[..200] + "..." : line;
    }

    private static string Mb(long? kb) => kb is { } k ? (k / 1024.0).ToString("F0", CultureInfo.InvariantCulture) + " MiB" : "n/a";

    public string TargetsTable() => MarkdownTable.Render(["model", "target", "measured", "status"],
        runs.SelectMany(x => new IReadOnlyList<string>[]
        {
            [x.Result.Model, "0 changed outputs", $"{x.Result.Changed} of {x.Result.Completed}", Met(x.Result.Changed == 0)],
            [x.Result.Model, "0 failures while an expert node is up", $"{x.Result.Failed} of {x.Result.Requests}", Met(x.Result.Failed == 0)],
            [x.Result.Model, "recovery p99 <= 20 s", $"{S(x.Result.Recovery.P99)} (p50 {S(x.Result.Recovery.P50)}, {x.Result.Recovery.Samples} streams)",
                Met(x.Result.Recovery.Samples == 0 || x.Result.Recovery.P99 <= ModelResult.RecoveryTargetSeconds)],
            [x.Result.Model, "0 false downings", x.Result.FalseDownings.Count.ToString(CultureInfo.InvariantCulture), Met(x.Result.FalseDownings.Count == 0)],
            [x.Result.Model, "a hung node exits by itself on resume, with a non-zero code", ResumeExits(x.Data), ResumeStatus(x.Data)],
        }));

    /// <summary>What each resumed node did: its exit code, or that the harness had to kill it.</summary>
    private static string ResumeExits(RunData d)
    {
        var resumed = d.Faults.Where(f => f.Kind == "resume").ToList();
        if (resumed.Count == 0) return "no hang in this run";
        return "exit codes: " + string.Join(", ", resumed.Select(r =>
            d.Faults.FirstOrDefault(f => f.Node == r.Node && f.Incarnation == r.Incarnation && f.Kind is "exit" or "finding") is { } e
                ? e.Kind == "finding" ? "none (killed after 60 s)" : e.ExitCode?.ToString(CultureInfo.InvariantCulture) ?? "?"
                : "?"));
    }

    private static string ResumeStatus(RunData d)
    {
        var resumed = d.Faults.Where(f => f.Kind == "resume").ToList();
        if (resumed.Count == 0) return "n/a";
        bool ok = resumed.All(r => d.Faults.Any(f => f.Node == r.Node && f.Incarnation == r.Incarnation && f.Kind == "exit" && f.ExitCode is { } c && c != 0));
        return Met(ok);
    }

    public string RequestsTable() => MarkdownTable.Render(
        ["model", "requests", "completed", "failed", "changed", "faults", "TTFT p50 / p99 during faults", "TTFT p50 / p99 outside",
         "TPOT p50 / p99 during faults", "TPOT p50 / p99 outside", "requests during / outside", "recovery p50 / p99"],
        runs.Select(x =>
        {
            var r = x.Result;
            return (IReadOnlyList<string>)
            [
                r.Model, r.Requests.ToString(CultureInfo.InvariantCulture), r.Completed.ToString(CultureInfo.InvariantCulture),
                r.Failed.ToString(CultureInfo.InvariantCulture), r.Changed.ToString(CultureInfo.InvariantCulture), r.Faults.Count.ToString(CultureInfo.InvariantCulture),
                $"{S(r.TtftDuring.P50)} / {S(r.TtftDuring.P99)}", $"{S(r.TtftOutside.P50)} / {S(r.TtftOutside.P99)}",
                $"{Ms(r.TpotDuring.P50)} / {Ms(r.TpotDuring.P99)}", $"{Ms(r.TpotOutside.P50)} / {Ms(r.TpotOutside.P99)}",
                $"{r.RequestsDuring} / {r.RequestsOutside}", $"{S(r.Recovery.P50)} / {S(r.Recovery.P99)}",
            ];
        }));

    public void Print()
    {
        Console.WriteLine();
        Console.WriteLine("Chaos bench — " + MachineLine());
        Console.WriteLine();
        Console.Write(RequestsTable());
        Console.WriteLine();
        Console.Write(TargetsTable());
    }

    public void Write(string mdPath)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(mdPath))!);
        File.WriteAllText(mdPath, Markdown());
        var json = new
        {
            date,
            options,
            machine,
            ramGiB,
            runs = runs.Select(x => new
            {
                x.Result,
                x.Data.Model,
                x.Data.Duration,
                x.Data.Aborted,
                x.Data.LogFile,
                faults = x.Data.Faults,
                membership = x.Data.Membership,
                logLines = x.Data.LogLines,
                rss = x.Data.Rss,
                running = x.Data.RunningSamples.Select(s => new[] { s.At, s.Running }),
                requests = x.Data.Requests.Select(r => new
                {
                    r.Id, r.Client, r.Prompt, r.Start, r.End, r.Status, r.FinishReason, r.Failure, r.Check, r.ComparedTokens,
                    // Counts and the first/last token time, not every id and time: the full run's JSON stays small enough to commit.
                    tokens = r.TokenIds.Count,
                    firstToken = r.TokenTimes.Count > 0 ? Math.Round(r.TokenTimes[0], 4) : (double?)null,
                    lastToken = r.TokenTimes.Count > 0 ? Math.Round(r.TokenTimes[^1], 4) : (double?)null,
                }),
            }),
        };
        File.WriteAllText(Path.ChangeExtension(mdPath, ".json"), JsonSerializer.Serialize(json, JsonOptions));
    }
}
