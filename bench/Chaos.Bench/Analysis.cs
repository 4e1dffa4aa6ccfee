namespace MoeServer.Bench.Chaos;

/// <summary>p50 / p99 of a sample (seconds); NaN when empty, +inf when the rank falls on an unbounded value.</summary>
internal sealed record Pct(double P50, double P99, int Samples)
{
    public static Pct Of(IEnumerable<double> values)
    {
        var v = values.Where(x => !double.IsNaN(x)).Order().ToArray();
        return new Pct(At(v, 50), At(v, 99), v.Length);
    }

    private static double At(double[] sorted, double p)
    {
        if (sorted.Length == 0) return double.NaN;
        double rank = p / 100.0 * (sorted.Length - 1);
        int lo = (int)Math.Floor(rank);
        int hi = Math.Min(sorted.Length - 1, lo + 1);
        if (double.IsPositiveInfinity(sorted[hi])) return rank == lo && !double.IsPositiveInfinity(sorted[lo]) ? sorted[lo] : double.PositiveInfinity;
        return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo);
    }
}

/// <summary>One kill or hang: when, which node, the streams running then and how long each waited for its next token.</summary>
internal sealed record FaultRecovery(double At, string Kind, string Node, int Running, int Recovered, int NeverRecovered, double MaxSeconds, double WindowEnd);

/// <summary>A downing or removal of a node the schedule had not killed or hung in the 3 minutes before.</summary>
internal sealed record FalseDowning(double At, string Node, string Change);

/// <summary>What a model's run measured, in the terms of issue 15's targets.</summary>
internal sealed record ModelResult(string Model, int Requests, int Completed, int Failed, int Changed, int Checked, int ComparedTokens,
    Dictionary<string, int> FailureKinds, List<string> ChangedExamples, Pct TtftDuring, Pct TtftOutside, Pct TpotDuring, Pct TpotOutside,
    int RequestsDuring, int RequestsOutside, List<FaultRecovery> Faults, Pct Recovery, List<FalseDowning> FalseDownings, double TokensPerSecond)
{
    public const double RecoveryTargetSeconds = 20;
    /// <summary>A downing counts as expected for this long after a kill or hang of that node (detection + SBR + removal).</summary>
    public const double ExpectedDowningSeconds = 180;

    public static ModelResult From(RunData d)
    {
        var done = d.Requests.Where(r => r.End > r.Start).ToList();
        var ok = done.Where(r => r.Ok).ToList();
        var failed = done.Where(r => !r.Ok).ToList();
        var changed = ok.Where(r => r.Check != "same").ToList();

        // Recovery: for every stream running at a fault, the time from the fault to its next token (+inf if it never got one).
        var faults = new List<FaultRecovery>();
        var recoveries = new List<double>();
        foreach (var f in d.Faults.Where(f => f.Kind is "kill" or "hang"))
        {
            var runningThen = done.Where(r => r.Start < f.At && r.End > f.At).ToList();
            var waits = runningThen.Select(r =>
            {
                int i = r.TokenTimes.FindIndex(t => t > f.At);
                return i >= 0 ? r.TokenTimes[i] - f.At : r.Ok ? double.NaN : double.PositiveInfinity; // NaN: it had already sent its last token
            }).Where(w => !double.IsNaN(w)).ToList();
            recoveries.AddRange(waits);
            var finite = waits.Where(double.IsFinite).ToList();
            double max = finite.Count == 0 ? 0 : finite.Max();
            // The window ends when every stream running at the fault got a token or ended.
            double end = runningThen.Count == 0 ? f.At : Math.Max(f.At + max, runningThen.Where(r => !r.Ok).Select(r => r.End).DefaultIfEmpty(f.At).Max());
            faults.Add(new FaultRecovery(f.At, f.Kind, f.Node, runningThen.Count, finite.Count, waits.Count - finite.Count,
                finite.Count == 0 ? double.NaN : max, end));
        }
        bool During(RequestRecord r) => faults.Any(f => r.Start < f.WindowEnd && r.End > f.At);
        var during = done.Where(During).ToList();
        var outside = done.Where(r => !During(r)).ToList();

        var falseDownings = new List<FalseDowning>();
        foreach (var m in d.Membership.Where(m => m.To.StartsWith("Down", StringComparison.Ordinal) || (m.To == "Removed" && !m.From.StartsWith("Down", StringComparison.Ordinal))))
        {
            bool expected = d.Faults.Any(f => f.Node == m.Node && f.Kind is "kill" or "hang" or "forced-kill" or "unexpected-exit"
                                              && f.At <= m.At + 1 && m.At - f.At <= ExpectedDowningSeconds);
            if (!expected) falseDownings.Add(new FalseDowning(m.At, m.Node, $"{m.From} -> {m.To}"));
        }

        double tokens = done.Sum(r => r.TokenTimes.Count(t => t >= 0 && t <= d.LoadEnd));
        return new ModelResult(d.Model, done.Count, ok.Count, failed.Count, changed.Count, ok.Count, ok.Sum(r => r.ComparedTokens),
            failed.GroupBy(r => Kind(r.Failure!)).ToDictionary(g => g.Key, g => g.Count()),
            changed.Take(5).Select(r => $"{r.Id} (prompt {r.Prompt}): {r.Check}").ToList(),
            Pct.Of(during.Select(r => r.Ttft)), Pct.Of(outside.Select(r => r.Ttft)),
            Pct.Of(during.Select(r => r.Tpot)), Pct.Of(outside.Select(r => r.Tpot)), during.Count, outside.Count,
            faults, Pct.Of(recoveries), falseDownings, tokens / Math.Max(1, d.LoadEnd));
    }

    /// <summary>A failure message without its request-specific details, to group them.</summary>
    private static string Kind(string failure)
    {
        string s = System.Text.RegularExpressions.Regex.Replace(failure, @"\d+(\.\d+)?", "N");
        return s.Length > 160 ? s[..160] + "..." : s;
    }
}
