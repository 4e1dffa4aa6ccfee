using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;

namespace MoeServer.Bench.Chaos;

/// <summary>
/// One incarnation of a cluster node: a child process of the server executable (<c>dotnet MoeServer.Gateway.dll</c>).
/// Signals go straight to its pid (the dotnet host runs the app in-process), so SIGSTOP/SIGCONT/SIGKILL hit the server.
/// </summary>
internal sealed partial class NodeProcess : IDisposable
{
    private readonly Process _process;
    private readonly ConcurrentQueue<string> _tail = new();
    private readonly TaskCompletionSource<string> _listening = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Action<NodeProcess, string> _onLine;

    private NodeProcess(Process process, string name, int incarnation, Action<NodeProcess, string> onLine)
    {
        _process = process;
        Name = name;
        Incarnation = incarnation;
        _onLine = onLine;
    }

    public string Name { get; }
    public int Incarnation { get; }
    public int Pid { get; private set; }
    public double StartedAt { get; private set; }
    public bool HasExited => _process.HasExited;
    public int? ExitCode => _process.HasExited ? _process.ExitCode : null;
    public long? RssStartKb { get; set; }
    public long? RssEndKb { get; set; }

    /// <summary>The URL the node printed once Kestrel listened.</summary>
    public Task<string> Listening => _listening.Task;

    /// <summary>The last lines of its output (for error messages).</summary>
    public string Tail => string.Join('\n', _tail);

    public static NodeProcess Start(string dll, string name, int incarnation, IEnumerable<string> args, string logFile, double now,
        Action<NodeProcess, string> onLine)
    {
        var psi = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true, // so the child never reads the bench's terminal (Ctrl+C goes to the bench only)
            UseShellExecute = false,
        };
        psi.ArgumentList.Add(dll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["DOTNET_gcServer"] = "0";
        var p = new Process { StartInfo = psi, EnableRaisingEvents = true };
        var node = new NodeProcess(p, name, incarnation, onLine) { StartedAt = now };
        var log = new StreamWriter(logFile, append: true) { AutoFlush = true };
        log.WriteLine($"==== {name} incarnation {incarnation}: dotnet {dll} {string.Join(' ', args)}");
        void Line(string? line)
        {
            if (line is null) return;
            lock (log) log.WriteLine(line);
            node.OnLine(line);
        }
        p.OutputDataReceived += (_, e) => Line(e.Data);
        p.ErrorDataReceived += (_, e) => Line(e.Data);
        p.Exited += (_, _) => { lock (log) log.Flush(); };
        p.Start();
        node.Pid = p.Id;
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        return node;
    }

    private void OnLine(string line)
    {
        _tail.Enqueue(line);
        while (_tail.Count > 40) _tail.TryDequeue(out _);
        const string marker = "listening on ";
        int i = line.IndexOf(marker, StringComparison.Ordinal);
        if (i >= 0) _listening.TrySetResult(line[(i + marker.Length)..].Trim());
        _onLine(this, line);
    }

    public void Signal(int signal)
    {
        if (_process.HasExited) return;
        if (SysKill(Pid, signal) != 0) throw new InvalidOperationException($"kill -{signal} {Pid} failed (errno {Marshal.GetLastPInvokeError()})");
    }

    public const int SigKill = 9;
    public const int SigCont = 18;
    public const int SigStop = 19;

    /// <summary>VmRSS from /proc/PID/status in KiB, or null once the process is gone.</summary>
    public long? RssKb()
    {
        try
        {
            foreach (var line in File.ReadLines($"/proc/{Pid}/status"))
            {
                if (!line.StartsWith("VmRSS:", StringComparison.Ordinal)) continue;
                var parts = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                return long.Parse(parts[1], CultureInfo.InvariantCulture);
            }
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
        return null;
    }

    public async Task<bool> WaitForExitAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await _process.WaitForExitAsync(cts.Token).ConfigureAwait(false);
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    /// <summary>SIGKILL (a stopped process dies too) and reap it; never throws.</summary>
    public void KillNow()
    {
        try
        {
            if (!_process.HasExited) SysKill(Pid, SigKill);
            _process.WaitForExit(10_000);
        }
        catch (InvalidOperationException)
        {
        }
    }

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int SysKill(int pid, int signal);

    public void Dispose()
    {
        KillNow();
        _process.Dispose();
    }
}
