using System.Diagnostics;

namespace MoeServer.Tools;

/// <summary>
/// A one-line progress bar on stderr (stdout stays clean for the command's real output). When stderr is not a
/// terminal (CI logs), it prints a plain line every 10% instead of redrawing.
/// </summary>
internal sealed class ConsoleProgress(string label)
{
    private readonly bool _redraw = !Console.IsErrorRedirected;
    private int _lastDecile = -1;
    private readonly Stopwatch _sw = Stopwatch.StartNew();
    private readonly Lock _lock = new();
    private long _lastDraw = -1000;

    public void Report(long done, long total, string? extra = null)
    {
        lock (_lock)
        {
            double frac = total == 0 ? 1 : (double)done / total;
            if (!_redraw)
            {
                int decile = (int)(frac * 10);
                if (decile == _lastDecile) return;
                _lastDecile = decile;
                Console.Error.WriteLine($"{label}: {frac * 100:F0}% ({done}/{total}) {_sw.Elapsed.TotalSeconds:F1}s {extra}");
                return;
            }
            long now = _sw.ElapsedMilliseconds;
            if (done < total && now - _lastDraw < 100) return;
            _lastDraw = now;
            double f = total == 0 ? 1 : (double)done / total;
            int width = 30;
            int filled = (int)Math.Round(f * width);
            Console.Error.Write($"\r{label} [{new string('#', filled)}{new string('.', width - filled)}] {f * 100,5:F1}% {_sw.Elapsed.TotalSeconds,6:F1}s {extra}");
            if (done >= total) Console.Error.WriteLine();
        }
    }
}
