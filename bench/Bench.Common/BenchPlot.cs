using System.Globalization;
using ScottPlot;

namespace MoeServer.Bench.Common;

/// <summary>
/// PNG charts for bench results (throughput curves, fractions of roofline, ours vs a baseline).
/// Every method writes one 900x540 PNG, creating the folder if needed, and returns the path written.
/// </summary>
public static class BenchPlot
{
    public const int Width = 900;
    public const int Height = 540;

    private static readonly object FontLock = new();
    private static string? _fontName;
    private static bool _fontResolved;

    /// <summary>
    /// Line chart with markers and a legend. Points whose X or Y is NaN/infinite (or X &lt;= 0 when
    /// <paramref name="logX"/>) are dropped, so a series may carry gaps for missing measurements.
    /// With <paramref name="logX"/> the X axis is log scaled; when all series share at most 16 distinct
    /// X values (a batch or concurrency sweep) those values themselves are the tick labels.
    /// </summary>
    public static string Lines(string pngPath, string title, string xLabel, string yLabel,
        IReadOnlyList<(string Name, double[] X, double[] Y)> series, bool logX = false)
    {
        ArgumentNullException.ThrowIfNull(series);
        var plot = NewPlot(title);
        plot.XLabel(xLabel);
        plot.YLabel(yLabel);

        var distinctX = new SortedSet<double>();
        for (int i = 0; i < series.Count; i++)
        {
            var (name, x, y) = series[i];
            if (x.Length != y.Length)
                throw new ArgumentException($"series '{name}': X has {x.Length} points, Y has {y.Length}", nameof(series));
            var xs = new List<double>(x.Length);
            var ys = new List<double>(y.Length);
            for (int j = 0; j < x.Length; j++)
            {
                if (!double.IsFinite(x[j]) || !double.IsFinite(y[j]) || (logX && x[j] <= 0)) continue;
                xs.Add(logX ? Math.Log10(x[j]) : x[j]);
                ys.Add(y[j]);
                distinctX.Add(x[j]);
            }
            if (xs.Count == 0) continue;
            var sc = plot.Add.Scatter(xs.ToArray(), ys.ToArray(), plot.Add.Palette.GetColor(i));
            sc.LegendText = name;
            sc.LineWidth = 2;
            sc.MarkerSize = 7;
            sc.MarkerShape = MarkerShapes[i % MarkerShapes.Length];
        }

        if (logX && distinctX.Count > 0)
        {
            if (distinctX.Count <= 16)
            {
                var ticks = new ScottPlot.TickGenerators.NumericManual();
                foreach (var v in distinctX) ticks.AddMajor(Math.Log10(v), FormatNumber(v));
                plot.Axes.Bottom.TickGenerator = ticks;
            }
            else
            {
                plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic
                {
                    MinorTickGenerator = new ScottPlot.TickGenerators.LogMinorTickGenerator(),
                    IntegerTicksOnly = true,
                    LabelFormatter = v => FormatNumber(Math.Pow(10, v)),
                };
            }
            plot.Axes.Bottom.Label.Text = xLabel + " (log scale)";
        }

        plot.Axes.Margins(left: 0.05, right: 0.05, bottom: 0, top: 0.1);
        // Include y = 0 for non-negative data so curves are not visually exaggerated.
        plot.Axes.AutoScale();
        var lim = plot.Axes.GetLimits();
        if (lim.Bottom > 0) plot.Axes.SetLimitsY(0, lim.Top);
        plot.ShowLegend(Alignment.UpperLeft);
        return Save(plot, pngPath);
    }

    /// <summary>
    /// Bar chart, one bar per label with its value printed on top, plus an optional horizontal
    /// reference line (e.g. a roofline target) named in the legend.
    /// </summary>
    public static string Bars(string pngPath, string title, string yLabel,
        IReadOnlyList<(string Label, double Value)> bars, double? referenceLine = null, string? referenceLabel = null)
    {
        ArgumentNullException.ThrowIfNull(bars);
        var plot = NewPlot(title);
        plot.YLabel(yLabel);

        var list = new List<Bar>(bars.Count);
        var ticks = new Tick[bars.Count];
        var color = plot.Add.Palette.GetColor(0);
        for (int i = 0; i < bars.Count; i++)
        {
            double v = double.IsFinite(bars[i].Value) ? bars[i].Value : 0;
            list.Add(new Bar
            {
                Position = i,
                Value = v,
                FillColor = color,
                LineWidth = 0,
                Label = double.IsFinite(bars[i].Value) ? FormatNumber(v) : "n/a",
            });
            ticks[i] = new Tick(i, bars[i].Label);
        }
        double top = list.Count == 0 ? 1 : list.Max(b => b.Value);
        if (referenceLine is double r && double.IsFinite(r))
        {
            // Added before the bars so value labels (on a white box) are drawn over the line.
            var hl = plot.Add.HorizontalLine(r, 2, Colors.Red, LinePattern.Dashed);
            hl.LegendText = referenceLabel ?? FormatNumber(r);
            top = Math.Max(top, r);
            plot.ShowLegend(Alignment.UpperRight);
        }
        var bp = plot.Add.Bars(list);
        bp.ValueLabelStyle.FontSize = 13;
        bp.ValueLabelStyle.BackgroundColor = Colors.White;
        bp.ValueLabelStyle.Padding = 3;
        SetCategoryTicks(plot, ticks, bars.Select(b => b.Label));

        double bottom = Math.Min(0, list.Count == 0 ? 0 : list.Min(b => b.Value));
        plot.Axes.SetLimits(-0.6, Math.Max(0.6, bars.Count - 0.4), bottom, top <= 0 ? 1 : top * 1.15);
        return Save(plot, pngPath);
    }

    /// <summary>
    /// Grouped bar chart: one cluster per group (e.g. workload), one coloured bar per series in each
    /// cluster (e.g. ours vs llama.cpp), with a legend. NaN values leave a gap.
    /// </summary>
    public static string GroupedBars(string pngPath, string title, string yLabel,
        IReadOnlyList<string> groups, IReadOnlyList<(string Series, double[] Values)> series)
    {
        ArgumentNullException.ThrowIfNull(groups);
        ArgumentNullException.ThrowIfNull(series);
        var plot = NewPlot(title);
        plot.YLabel(yLabel);

        int n = Math.Max(1, series.Count);
        const double groupWidth = 0.8;
        double barWidth = groupWidth / n;
        var all = new List<Bar>();
        for (int s = 0; s < series.Count; s++)
        {
            var (name, values) = series[s];
            if (values.Length != groups.Count)
                throw new ArgumentException($"series '{name}' has {values.Length} values for {groups.Count} groups", nameof(series));
            var color = plot.Add.Palette.GetColor(s);
            for (int g = 0; g < groups.Count; g++)
            {
                if (!double.IsFinite(values[g])) continue;
                all.Add(new Bar
                {
                    Position = g - groupWidth / 2 + barWidth * (s + 0.5),
                    Value = values[g],
                    Size = barWidth * 0.92,
                    FillColor = color,
                    LineWidth = 0,
                    Label = n <= 3 && groups.Count <= 8 ? FormatNumber(values[g]) : "",
                });
            }
            plot.Legend.ManualItems.Add(new LegendItem { LabelText = name, FillColor = color });
        }
        var bp = plot.Add.Bars(all);
        bp.ValueLabelStyle.FontSize = 12;
        bp.ValueLabelStyle.BackgroundColor = Colors.White;
        bp.ValueLabelStyle.Padding = 3;
        SetCategoryTicks(plot, groups.Select((g, i) => new Tick(i, g)).ToArray(), groups);

        double top = all.Count == 0 ? 1 : all.Max(b => b.Value);
        double bottom = Math.Min(0, all.Count == 0 ? 0 : all.Min(b => b.Value));
        plot.Axes.SetLimits(-0.6, Math.Max(0.6, groups.Count - 0.4), bottom, top <= 0 ? 1 : top * 1.18);
        plot.ShowLegend(Alignment.UpperLeft);
        return Save(plot, pngPath);
    }

    /// <summary>Renders one chart of each kind into <paramref name="dir"/>; returns the paths written.</summary>
    public static IReadOnlyList<string> SelfTest(string dir)
    {
        var batches = new double[] { 1, 2, 4, 8, 16, 32, 64, 128 };
        var ours = batches.Select(b => 9.5 * b / (1 + b / 40.0)).ToArray();
        var torch = batches.Select(b => 7.0 * b / (1 + b / 25.0)).ToArray();
        var partial = batches.Select((b, i) => i < 5 ? 6.0 * b / (1 + b / 20.0) : double.NaN).ToArray();
        var paths = new List<string>
        {
            Lines(Path.Combine(dir, "selftest-lines.png"), "Decode throughput vs batch (self-test data)",
                "batch size", "tokens/s",
                [("ours (bf16)", batches, ours), ("torch eager", batches, torch), ("llama.cpp (partial)", batches, partial)],
                logX: true),
            Lines(Path.Combine(dir, "selftest-lines-linear.png"), "Latency vs concurrency (self-test data)",
                "concurrent requests", "p50 latency (ms)",
                [("p50", [1, 2, 4, 8, 16], [40, 42, 47, 60, 95]), ("p99", [1, 2, 4, 8, 16], [55, 61, 70, 98, 180])]),
            Bars(Path.Combine(dir, "selftest-bars.png"), "Fraction of memory roofline (self-test data)",
                "fraction of peak", [("gemv M=1", 0.82), ("gate+up M=1", 0.77), ("down M=4", 0.64), ("attn decode", 0.41), ("lm_head", 0.88)],
                referenceLine: 0.8, referenceLabel: "target 0.8"),
            GroupedBars(Path.Combine(dir, "selftest-grouped.png"), "Ours vs llama.cpp (self-test data)", "tokens/s",
                ["decode b=1", "decode b=8", "prefill 512", "mixed"],
                [("ours", [21.5, 120.3, 950, 300]), ("llama.cpp", [24.1, 98.7, 1010, double.NaN])]),
        };
        return paths;
    }

    private static readonly MarkerShape[] MarkerShapes =
    [
        MarkerShape.FilledCircle, MarkerShape.FilledSquare, MarkerShape.FilledTriangleUp,
        MarkerShape.FilledDiamond, MarkerShape.FilledTriangleDown, MarkerShape.OpenCircle,
    ];

    private static Plot NewPlot(string title)
    {
        var plot = new Plot();
        if (ResolveFont() is string font) plot.Font.Set(font);
        plot.Add.Palette = new ScottPlot.Palettes.Category10();
        plot.Title(title, size: 18);
        plot.Axes.Bottom.Label.FontSize = 15;
        plot.Axes.Left.Label.FontSize = 15;
        plot.Axes.Bottom.TickLabelStyle.FontSize = 13;
        plot.Axes.Left.TickLabelStyle.FontSize = 13;
        plot.Legend.FontSize = 13;
        // ScottPlot's default packs ~20 Y ticks into 540 px; half that reads better.
        plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic { TickDensity = 0.5 };
        return plot;
    }

    /// <summary>Category labels on the X axis; long ones are rotated so they do not overlap.</summary>
    private static void SetCategoryTicks(Plot plot, Tick[] ticks, IEnumerable<string> labels)
    {
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(ticks);
        plot.Axes.Bottom.MajorTickStyle.Length = 0;
        plot.HideGrid();
        plot.Grid.YAxisStyle.IsVisible = true;
        int count = ticks.Length;
        int longest = labels.DefaultIfEmpty("").Max(l => l.Length);
        if (count > 0 && longest * 8 > (Width - 120) / count)
        {
            plot.Axes.Bottom.TickLabelStyle.Rotation = -30;
            plot.Axes.Bottom.TickLabelStyle.Alignment = Alignment.MiddleRight;
            // Rotated labels end at their tick and run down-left: make room below and, for the first
            // category, to the left (13 px DejaVu Sans averages ~7.5 px a character).
            double textPx = longest * 7.5;
            plot.Axes.Bottom.MinimumSize = (float)Math.Min(220, 30 + textPx * 0.5);
            plot.Axes.Left.MinimumSize = (float)Math.Min(300, Math.Max(60, textPx * 0.87 - Width / (2.0 * count)));
        }
    }

    /// <summary>
    /// The NoDependencies Skia build has no fontconfig, so pick a sans font file explicitly when one is
    /// installed (DejaVu on Debian); otherwise leave ScottPlot's default.
    /// </summary>
    /// <summary>A font every bench plot can use (DejaVu/Liberation when installed), or null for ScottPlot's default.</summary>
    public static string? FontName => ResolveFont();

    private static string? ResolveFont()
    {
        lock (FontLock)
        {
            if (_fontResolved) return _fontName;
            _fontResolved = true;
            string[] candidates =
            [
                "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
                "/usr/share/fonts/dejavu/DejaVuSans.ttf",
                "/usr/share/fonts/TTF/DejaVuSans.ttf",
                "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
            ];
            foreach (var file in candidates)
            {
                if (!File.Exists(file)) continue;
                try
                {
                    const string name = "BenchPlotSans";
                    Fonts.AddFontFile(name, file);
                    var bold = file.Replace("DejaVuSans.ttf", "DejaVuSans-Bold.ttf").Replace("-Regular.ttf", "-Bold.ttf");
                    if (bold != file && File.Exists(bold)) Fonts.AddFontFile(name, bold, bold: true);
                    _fontName = name;
                    break;
                }
                catch (Exception ex) when (ex is IOException or ArgumentException or InvalidOperationException)
                {
                    // fall through to the next candidate / ScottPlot's default font
                }
            }
            return _fontName;
        }
    }

    private static string Save(Plot plot, string pngPath)
    {
        var full = Path.GetFullPath(pngPath);
        var folder = Path.GetDirectoryName(full);
        if (!string.IsNullOrEmpty(folder)) Directory.CreateDirectory(folder);
        plot.SavePng(full, Width, Height);
        return full;
    }

    /// <summary>Compact number for labels: 3 significant digits, thousands separators, no exponent for ordinary sizes.</summary>
    public static string FormatNumber(double v)
    {
        if (!double.IsFinite(v)) return "n/a";
        double a = Math.Abs(v);
        if (a == 0) return "0";
        if (a >= 1e7 || a < 1e-3) return v.ToString("0.##e0", CultureInfo.InvariantCulture);
        if (a >= 100) return Math.Round(v).ToString("#,0", CultureInfo.InvariantCulture);
        if (a >= 10) return v.ToString("0.#", CultureInfo.InvariantCulture);
        if (a >= 1) return v.ToString("0.##", CultureInfo.InvariantCulture);
        return v.ToString("0.###", CultureInfo.InvariantCulture);
    }
}
