using MoeServer.Bench.Common;
using ScottPlot;

namespace MoeServer.Bench.Chaos;

/// <summary>
/// The run's timeline as a PNG (BenchPlot's size and font): tokens/s per second and running requests (right axis),
/// with a vertical marker for every kill, hang, resume, restart and node exit, and for the gateway's view of
/// downings and removals.
/// </summary>
internal static class TimelinePlot
{
    public static string Write(string pngPath, RunData d)
    {
        var plot = new Plot();
        if (BenchPlot.FontName is string font) plot.Font.Set(font);
        plot.Title($"Chaos timeline: {d.Model}", size: 18);
        plot.XLabel("seconds since the load began");
        plot.YLabel("tokens/s (1 s bins)");
        plot.Axes.Right.Label.Text = "running requests";

        int seconds = (int)Math.Ceiling(Math.Max(1, d.Requests.Select(r => r.End).DefaultIfEmpty(d.LoadEnd).Max()));
        var perSecond = new double[seconds + 1];
        foreach (var r in d.Requests)
            foreach (double t in r.TokenTimes)
                if (t >= 0 && t <= seconds) perSecond[(int)t]++;
        var xs = Enumerable.Range(0, perSecond.Length).Select(i => i + 0.5).ToArray();
        var tps = plot.Add.Scatter(xs, perSecond, Colors.SteelBlue);
        tps.MarkerSize = 0;
        tps.LineWidth = 1.5f;
        if (d.RunningSamples.Count > 0)
        {
            var run = plot.Add.Scatter(d.RunningSamples.Select(s => s.At).ToArray(), d.RunningSamples.Select(s => (double)s.Running).ToArray(), Colors.Black);
            run.MarkerSize = 0;
            run.LineWidth = 1;
            run.LinePattern = LinePattern.Dotted;
            run.Axes.YAxis = plot.Axes.Right;
        }

        var styles = new Dictionary<string, (Color Color, LinePattern Pattern)>
        {
            ["kill"] = (Colors.Red, LinePattern.Solid),
            ["hang"] = (Colors.DarkOrange, LinePattern.Solid),
            ["resume"] = (Colors.Green, LinePattern.Dashed),
            ["restart"] = (Colors.Blue, LinePattern.Dashed),
            ["exit"] = (Colors.Gray, LinePattern.Dotted),
            ["member down/removed"] = (Colors.Purple, LinePattern.DenselyDashed),
        };
        var marks = d.Faults.Where(f => f.Kind is "kill" or "hang" or "resume" or "restart" or "exit" or "forced-kill" or "unexpected-exit")
            .Select(f => (f.At, Kind: f.Kind is "forced-kill" or "unexpected-exit" ? "exit" : f.Kind))
            .Concat(d.Membership.Where(m => m.To.StartsWith("Down", StringComparison.Ordinal) || m.To == "Removed").Select(m => (m.At, Kind: "member down/removed")));
        foreach (var (at, kind) in marks)
        {
            var (color, pattern) = styles[kind];
            plot.Add.VerticalLine(at, 1.5f, color.WithAlpha(0.7), pattern);
        }
        foreach (var (kind, (color, pattern)) in styles)
            plot.Legend.ManualItems.Add(new LegendItem { LabelText = kind, LineColor = color, LinePattern = pattern, LineWidth = 2 });
        plot.Legend.ManualItems.Add(new LegendItem { LabelText = "tokens/s", LineColor = Colors.SteelBlue, LineWidth = 2 });
        plot.Legend.ManualItems.Add(new LegendItem { LabelText = "running (right axis)", LineColor = Colors.Black, LinePattern = LinePattern.Dotted, LineWidth = 2 });
        plot.ShowLegend(Alignment.UpperRight);
        plot.Legend.FontSize = 11;
        plot.Axes.AutoScale();
        var lim = plot.Axes.GetLimits();
        plot.Axes.SetLimitsY(0, Math.Max(1, lim.Top) * 1.35);
        plot.Axes.SetLimitsY(0, Math.Max(1, d.RunningSamples.Select(s => s.Running).DefaultIfEmpty(1).Max()) * 1.35, plot.Axes.Right);
        var full = Path.GetFullPath(pngPath);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        plot.SavePng(full, BenchPlot.Width, BenchPlot.Height);
        return full;
    }
}
