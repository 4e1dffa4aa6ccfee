using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.RegularExpressions;

namespace MoeServer.Gateway.Tests;

/// <summary>
/// The server as a real child process (<c>dotnet MoeServer.Gateway.dll ...</c>), with its output collected line by line.
/// Dispose kills it if it still runs.
/// </summary>
public sealed partial class ServerProcess : IDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _output = new();
    private readonly TaskCompletionSource<Uri> _listening = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource<string> _clusterAddress = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private ServerProcess(IEnumerable<string> args)
    {
        var psi = StartInfo(args);
        _process = new Process { StartInfo = psi, EnableRaisingEvents = true };
        _process.OutputDataReceived += (_, e) => OnLine(e.Data);
        _process.ErrorDataReceived += (_, e) => OnLine(e.Data);
        _process.Exited += (_, _) =>
        {
            _listening.TrySetException(new InvalidOperationException("the server exited before listening:\n" + Output));
            _clusterAddress.TrySetException(new InvalidOperationException("the server exited before its ActorSystem was up:\n" + Output));
        };
        _process.Start();
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    public static string ServerDll
    {
        get
        {
            string dll = Path.Combine(AppContext.BaseDirectory, "MoeServer.Gateway.dll");
            Assert.True(File.Exists(dll), $"{dll} was not built next to the tests");
            return dll;
        }
    }

    public int Pid => _process.Id;

    /// <summary>Everything the process wrote so far (stdout and stderr interleaved).</summary>
    public string Output
    {
        get
        {
            lock (_output) return _output.ToString();
        }
    }

    /// <summary>Starts a node on ephemeral HTTP and cluster ports.</summary>
    public static ServerProcess Start(params string[] args) =>
        new(["--urls", "http://127.0.0.1:0", "--cluster-port", "0", .. args]);

    /// <summary>Runs the server to its exit (for command lines that must fail fast).</summary>
    public static (int ExitCode, string Stdout, string Stderr) RunToExit(TimeSpan timeout, params string[] args)
    {
        using var p = Process.Start(StartInfo(args))!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeout))
        {
            p.Kill(entireProcessTree: true);
            Assert.Fail($"the server with {string.Join(' ', args)} did not exit within {timeout}");
        }
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    /// <summary>The "listening on http://..." address.</summary>
    public Task<Uri> ListeningAsync(TimeSpan timeout) => WithOutput(_listening.Task.WaitAsync(timeout), "listening");

    /// <summary>The "cluster address akka.tcp://..." address.</summary>
    public Task<string> ClusterAddressAsync(TimeSpan timeout) => WithOutput(_clusterAddress.Task.WaitAsync(timeout), "cluster address");

    /// <summary>SIGTERM, as an orchestrator or Ctrl+C-less shutdown sends it (Process.Kill is SIGKILL).</summary>
    public void Terminate()
    {
        if (kill(_process.Id, 15) != 0) throw new InvalidOperationException($"kill -TERM {_process.Id} failed: errno {Marshal.GetLastPInvokeError()}");
    }

    public bool WaitForExit(TimeSpan timeout)
    {
        if (!_process.WaitForExit(timeout)) return false;
        _process.WaitForExit(); // drains the redirected streams
        return true;
    }

    public int ExitCode => _process.ExitCode;

    public void Dispose()
    {
        try
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
                _process.WaitForExit(TimeSpan.FromSeconds(10));
            }
        }
        catch (InvalidOperationException)
        {
        }
        _process.Dispose();
    }

    /// <summary>A loopback port nothing listens on (bound once and released).</summary>
    public static int UnusedPort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        int port = ((IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        return port;
    }

    private static ProcessStartInfo StartInfo(IEnumerable<string> args)
    {
        var psi = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = AppContext.BaseDirectory,
        };
        psi.ArgumentList.Add(ServerDll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment.Remove("ASPNETCORE_URLS");
        psi.Environment.Remove("DOTNET_URLS");
        return psi;
    }

    private void OnLine(string? line)
    {
        if (line is null) return;
        lock (_output) _output.AppendLine(line);
        if (ListeningLine().Match(line) is { Success: true } m) _listening.TrySetResult(new Uri(m.Groups[1].Value));
        if (ClusterLine().Match(line) is { Success: true } c) _clusterAddress.TrySetResult(c.Groups[1].Value);
    }

    private async Task<T> WithOutput<T>(Task<T> task, string what)
    {
        try
        {
            return await task.ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            throw new TimeoutException($"no '{what}' line in time; output so far:\n{Output}");
        }
    }

    [GeneratedRegex(@"^listening on (http://\S+)$")]
    private static partial Regex ListeningLine();

    [GeneratedRegex(@"^cluster address (akka\.tcp://\S+)$")]
    private static partial Regex ClusterLine();

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int kill(int pid, int signal);
}
