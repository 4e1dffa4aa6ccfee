using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;

namespace MoeServer.Bench.Chaos;

/// <summary>A line of a node's log that speaks of membership (downing, removal, unreachability).</summary>
internal sealed record LogEvent(double At, string Node, int Incarnation, string Line);

/// <summary>
/// The loopback cluster: one gateway and N expert nodes, each a child process on ports of its own that stay the same
/// across restarts, all joining through the same seed list (the gateway's cluster port). Only the wire dtype and the
/// precision are set beyond the ports: every other knob is the shipped hocon default.
/// </summary>
internal sealed partial class LocalCluster : IDisposable
{
    private readonly string _dll;
    private readonly string _model;
    private readonly string _configFile;
    private readonly string _logFile;
    private readonly int[] _clusterPorts;
    private readonly int[] _httpPorts;
    private readonly Func<double> _clock;
    private readonly ConcurrentBag<NodeProcess> _all = [];
    private readonly NodeProcess?[] _current;
    private readonly int[] _incarnations;

    public LocalCluster(string dll, string model, int experts, string logFile, Func<double> clock)
    {
        _dll = dll;
        _model = model;
        _logFile = logFile;
        _clock = clock;
        int n = experts + 1;
        var ports = FreePorts(2 * n);
        _clusterPorts = ports[..n];
        _httpPorts = ports[n..];
        _current = new NodeProcess?[n];
        _incarnations = new int[n];
        _configFile = Path.Combine(Path.GetTempPath(), $"moe-chaos-{Environment.ProcessId}.hocon");
        File.WriteAllText(_configFile, "moe.experts.wire-dtype = f32\n");
    }

    public int Nodes => _current.Length;
    public string LogFile => _logFile;
    /// <summary>The run's clock (seconds): node starts, log lines, schedule events and request times all use it.</summary>
    public double Now() => _clock();
    public ConcurrentQueue<LogEvent> LogEvents { get; } = new();
    public IEnumerable<NodeProcess> AllIncarnations => _all;
    public Uri GatewayUri => new($"http://127.0.0.1:{_httpPorts[0]}/");
    public string SeedNode => $"127.0.0.1:{_clusterPorts[0]}";
    public static string NameOf(int slot) => slot == 0 ? "gateway" : $"expert-{slot}";
    public string AddressOf(int slot) => $"akka.tcp://moe@127.0.0.1:{_clusterPorts[slot]}";
    public Uri HttpOf(int slot) => new($"http://127.0.0.1:{_httpPorts[slot]}/");
    public NodeProcess? Current(int slot) => _current[slot];

    /// <summary>The slot whose cluster address is <paramref name="address"/>, or -1.</summary>
    public int SlotOf(string address)
    {
        for (int i = 0; i < _clusterPorts.Length; i++)
            if (address.TrimEnd('/').EndsWith($"@127.0.0.1:{_clusterPorts[i]}", StringComparison.Ordinal)) return i;
        return -1;
    }

    public NodeProcess Start(int slot)
    {
        var args = new List<string>
        {
            "--role", slot == 0 ? "gateway" : "expert",
            "--cluster-port", _clusterPorts[slot].ToString(System.Globalization.CultureInfo.InvariantCulture),
            "--seed-nodes", SeedNode,
            "--hostname", "127.0.0.1",
            "--model", _model,
            "--precision", "f32",
            "--urls", HttpOf(slot).ToString().TrimEnd('/'),
            "--config", _configFile,
        };
        var node = NodeProcess.Start(_dll, NameOf(slot), ++_incarnations[slot], args, _logFile, _clock(), OnLine);
        _all.Add(node);
        _current[slot] = node;
        return node;
    }

    /// <summary>Waits for "listening on" (or the process's death); throws with its last output otherwise.</summary>
    public static async Task WaitListeningAsync(NodeProcess node, TimeSpan timeout)
    {
        var exited = Task.Run(async () => await node.WaitForExitAsync(timeout).ConfigureAwait(false));
        var done = await Task.WhenAny(node.Listening, exited, Task.Delay(timeout)).ConfigureAwait(false);
        if (done != node.Listening)
            throw new InvalidOperationException($"{node.Name} did not start (exit code {node.ExitCode?.ToString() ?? "none"}):\n{node.Tail}");
    }

    private void OnLine(NodeProcess node, string line)
    {
        string message = AkkaPrefix().Replace(line, "").Trim();
        if (MembershipLine().IsMatch(message)) LogEvents.Enqueue(new LogEvent(_clock(), node.Name, node.Incarnation, message));
    }

    // "2026-.. info: Akka.Actor.ActorSystem[0] [INFO][date][Thread 0019][path] message": keep the message.
    [GeneratedRegex(@"^.*?\[Thread \d+\]\[[^\]]*\]\s*", RegexOptions.CultureInvariant)]
    private static partial Regex AkkaPrefix();

    // Akka's own wording for downing, removal and unreachability, and the split-brain resolver's decisions.
    [GeneratedRegex(@"Marking .*node.* as|as \[?Down\]?|Leader is removing|SBR|[Ss]plit.?[Bb]rain|[Dd]owning|is DOWN|marked as unreachable|Shutting down myself|Cluster Node .* Shutting down|exit code", RegexOptions.CultureInvariant)]
    private static partial Regex MembershipLine();

    /// <summary>Kills every incarnation ever started (stopped ones too). Safe to call more than once, from any thread.</summary>
    public void KillAll()
    {
        foreach (var n in _all) n.KillNow();
    }

    public void Dispose()
    {
        KillAll();
        foreach (var n in _all) n.Dispose();
        try
        {
            File.Delete(_configFile);
        }
        catch (IOException)
        {
        }
    }

    /// <summary>
    /// A run of free ports below the ephemeral range (20000-30000), so that no outgoing connection takes a node's port
    /// while it is down between two incarnations.
    /// </summary>
    private static int[] FreePorts(int count)
    {
        var rng = new Random(Environment.ProcessId);
        for (int attempt = 0; attempt < 200; attempt++)
        {
            int first = 20000 + rng.Next(0, 10000 - count);
            var ports = Enumerable.Range(first, count).ToArray();
            if (ports.All(IsFree)) return ports;
        }
        throw new InvalidOperationException("no run of free loopback ports in 20000-30000");
    }

    private static bool IsFree(int port)
    {
        try
        {
            var l = new TcpListener(IPAddress.Loopback, port);
            l.Start();
            l.Stop();
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    public static double Seconds(long from, long to) => (to - from) / (double)Stopwatch.Frequency;
}
