using System.Diagnostics;
using System.Runtime.InteropServices;

namespace MoeServer.Actors.Cluster;

/// <summary>
/// Ends the process at once when it finds it was frozen (SIGSTOP, a stalled VM) for longer than the rest of the cluster
/// takes to down an unreachable node: by then its shards have new owners, so it must not serve them beside those
/// owners for the seconds it would take to learn it was downed. Exit code <see cref="NodeExitCodes.DownedByCluster"/>;
/// a restart brings the node back as a new member.
/// </summary>
/// <remarks>A dedicated thread sleeps in short ticks and compares the monotonic clock: a tick that returns far later
/// than asked means every thread of the process was stopped. Ordinary load delays a tick by milliseconds, not by the
/// tens of seconds of the threshold (failure detection + split-brain resolver stable-after).</remarks>
public sealed partial class PauseFence : IDisposable
{
    private static readonly TimeSpan Tick = TimeSpan.FromMilliseconds(250);
    private readonly TimeSpan _threshold;
    private readonly Action<string> _log;
    private readonly Thread _thread;
    private readonly Action<TimeSpan> _onPause;
    private volatile bool _stopping;

    /// <param name="onPause">What to do after a pause over the threshold (the server: exit; tests: record).</param>
    public PauseFence(TimeSpan threshold, Action<string> log, Action<TimeSpan>? onPause = null)
    {
        _threshold = threshold;
        _log = log;
        _onPause = onPause ?? ExitDowned;
        _thread = new Thread(Watch) { IsBackground = true, Name = "pause-fence" };
        _thread.Start();
    }

    public TimeSpan Threshold => _threshold;

    private void Watch()
    {
        long last = Stopwatch.GetTimestamp();
        while (!_stopping)
        {
            Thread.Sleep(Tick);
            long now = Stopwatch.GetTimestamp();
            var gap = Stopwatch.GetElapsedTime(last, now);
            last = now;
            if (gap < _threshold || _stopping) continue;
            _log($"this process was frozen for {gap.TotalSeconds:F1} s (over {_threshold.TotalSeconds:F0} s, after which the cluster " +
                $"downs an unreachable node and gives its shards to others): exiting with code {NodeExitCodes.DownedByCluster}; " +
                "restart it to rejoin as a new member");
            _onPause(gap);
            return;
        }
    }

    /// <summary>Exits without running shutdown handlers: draining or leaving would act on membership this node no longer has.</summary>
    public static void ExitDowned(TimeSpan _)
    {
        Thread.Sleep(200); // the console logger writes from its own queue
        Console.Out.Flush();
        Console.Error.Flush();
        if (OperatingSystem.IsLinux() || OperatingSystem.IsMacOS()) SysExit(NodeExitCodes.DownedByCluster);
        Environment.Exit(NodeExitCodes.DownedByCluster);
    }

    [LibraryImport("libc", EntryPoint = "_exit")]
    private static partial void SysExit(int status);

    public void Dispose() => _stopping = true;
}
