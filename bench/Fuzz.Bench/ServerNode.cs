using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace MoeServer.Bench.Fuzz;

/// <summary>The server as a child process (<c>dotnet MoeServer.Gateway.dll --urls http://127.0.0.1:0 ...</c>), its output
/// kept for the exception scan, its RSS read from /proc (the dotnet host runs the app in-process).</summary>
internal sealed class ServerNode : IDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _output = new();
    private readonly TaskCompletionSource<Uri> _listening = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private ServerNode(Process process) => _process = process;

    public Uri Uri { get; private set; } = null!;
    public HttpClient Http { get; private set; } = null!;

    public string Output
    {
        get
        {
            lock (_output) return _output.ToString();
        }
    }

    public static async Task<ServerNode> StartAsync(string dll, IEnumerable<string> args, Action<string> progress)
    {
        var psi = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            WorkingDirectory = Path.GetDirectoryName(dll)!,
        };
        psi.ArgumentList.Add(dll);
        foreach (string a in (string[])["--urls", "http://127.0.0.1:0", "--cluster-port", "0", .. args]) psi.ArgumentList.Add(a);
        psi.Environment.Remove("ASPNETCORE_URLS");
        var node = new ServerNode(new Process { StartInfo = psi, EnableRaisingEvents = true });
        node._process.OutputDataReceived += (_, e) => node.OnLine(e.Data);
        node._process.ErrorDataReceived += (_, e) => node.OnLine(e.Data);
        node._process.Exited += (_, _) => node._listening.TrySetException(new InvalidOperationException("the server exited:\n" + node.Output));
        node._process.Start();
        node._process.BeginOutputReadLine();
        node._process.BeginErrorReadLine();
        node.Uri = await node._listening.Task.WaitAsync(TimeSpan.FromSeconds(180)).ConfigureAwait(false);
        node.Http = new HttpClient { BaseAddress = node.Uri, Timeout = TimeSpan.FromSeconds(60) };
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(120);
        while (true)
        {
            using var r = await node.Http.GetAsync("/ready").ConfigureAwait(false);
            if (r.IsSuccessStatusCode) break;
            if (DateTime.UtcNow > deadline) throw new TimeoutException("the server did not become ready:\n" + node.Output);
            await Task.Delay(200).ConfigureAwait(false);
        }
        progress($"server pid {node._process.Id} ready on {node.Uri}");
        return node;
    }

    /// <summary>Resident set size of the server process (VmRSS).</summary>
    public long RssBytes()
    {
        foreach (string line in File.ReadLines($"/proc/{_process.Id}/status"))
        {
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) * 1024;
        }
        return 0;
    }

    /// <summary>A plain greedy completion: its status code ("200" when it is served).</summary>
    public async Task<string> NormalRequestAsync()
    {
        using var r = await Http.PostAsync("/v1/completions", new StringContent(
            """{"prompt":"In the beginning","max_tokens":4,"temperature":0}""", Encoding.UTF8, "application/json")).ConfigureAwait(false);
        return ((int)r.StatusCode).ToString(CultureInfo.InvariantCulture);
    }

    private void OnLine(string? line)
    {
        if (line is null) return;
        lock (_output) _output.AppendLine(line);
        if (line.StartsWith("listening on ", StringComparison.Ordinal)) _listening.TrySetResult(new Uri(line["listening on ".Length..].Trim()));
    }

    public void Dispose()
    {
        Http?.Dispose();
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
}
