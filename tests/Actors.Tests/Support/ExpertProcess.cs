using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.InteropServices;

namespace MoeServer.Actors.Tests.Support;

/// <summary>
/// An expert node as a real child process of the server executable (<c>--role expert</c>), so tests can kill it with
/// SIGKILL or stop it with SIGTERM as an operator or the OS would.
/// </summary>
public sealed partial class ExpertProcess : IDisposable
{
    private readonly Process _process;
    private readonly ConcurrentQueue<string> _output = new();
    private readonly TaskCompletionSource<string> _address = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private ExpertProcess(Process process)
    {
        _process = process;
    }

    public int Pid => _process.Id;
    public string Output => string.Join('\n', _output);
    public bool HasExited => _process.HasExited;
    public int ExitCode => _process.ExitCode;

    /// <summary>The cluster address the node printed once its ActorSystem was up.</summary>
    public Task<string> ClusterAddress => _address.Task;

    public static ExpertProcess Start(string model, string seedNode, string? extraHocon = null) =>
        Start(model, "expert", 0, seedNode, extraHocon);

    /// <summary>A node of any role on <paramref name="clusterPort"/> (0: any); without a seed node it forms its own cluster.</summary>
    public static ExpertProcess Start(string model, string role, int clusterPort, string? seedNode, string? extraHocon = null)
    {
        string dll = Path.Combine(AppContext.BaseDirectory, "MoeServer.Gateway.dll");
        Assert.True(File.Exists(dll), $"{dll} was not built next to the tests");
        var psi = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in new[] { dll, "--role", role, "--cluster-port", clusterPort.ToString(System.Globalization.CultureInfo.InvariantCulture),
                     "--model", model, "--precision", "f32", "--urls", "http://127.0.0.1:0" })
            psi.ArgumentList.Add(a);
        if (seedNode is not null)
        {
            psi.ArgumentList.Add("--seed-nodes");
            psi.ArgumentList.Add(seedNode);
        }
        if (extraHocon is not null)
        {
            string file = Path.Combine(Path.GetTempPath(), $"moe-expert-{Guid.NewGuid():N}.hocon");
            File.WriteAllText(file, extraHocon);
            psi.ArgumentList.Add("--config");
            psi.ArgumentList.Add(file);
        }
        var p = new Process { StartInfo = psi, EnableRaisingEvents = true };
        var node = new ExpertProcess(p);
        p.OutputDataReceived += (_, e) => node.OnLine(e.Data);
        p.ErrorDataReceived += (_, e) => node.OnLine(e.Data);
        p.Start();
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        return node;
    }

    private void OnLine(string? line)
    {
        if (line is null) return;
        _output.Enqueue(line);
        const string marker = "cluster address ";
        int i = line.IndexOf(marker, StringComparison.Ordinal);
        if (i >= 0) _address.TrySetResult(line[(i + marker.Length)..].Trim());
    }

    /// <summary>SIGKILL: the process dies at once, without leaving the cluster.</summary>
    public void KillHard() => _process.Kill(entireProcessTree: true);

    /// <summary>SIGTERM: the node drains and leaves the cluster.</summary>
    public void Terminate()
    {
        if (SysKill(_process.Id, 15) != 0) throw new InvalidOperationException($"kill -TERM {_process.Id} failed");
    }

    /// <summary>SIGSTOP: every thread stops, sockets stay open (a hung node, not a dead one).</summary>
    public void Freeze()
    {
        if (SysKill(_process.Id, 19) != 0) throw new InvalidOperationException($"kill -STOP {_process.Id} failed");
    }

    /// <summary>SIGCONT: a frozen node resumes.</summary>
    public void Thaw()
    {
        if (SysKill(_process.Id, 18) != 0) throw new InvalidOperationException($"kill -CONT {_process.Id} failed");
    }

    public async Task<bool> WaitForExitAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await _process.WaitForExitAsync(cts.Token);
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    [LibraryImport("libc", EntryPoint = "kill")]
    private static partial int SysKill(int pid, int signal);

    public void Dispose()
    {
        try
        {
            if (!_process.HasExited) _process.Kill(entireProcessTree: true);
        }
        catch (InvalidOperationException)
        {
        }
        _process.Dispose();
    }
}
