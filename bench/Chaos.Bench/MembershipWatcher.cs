using System.Text.Json;

namespace MoeServer.Bench.Chaos;

/// <summary>A change in the gateway's view of one member: its status (Joining, Up, Leaving, Exiting, Down, Removed) or reachability.</summary>
internal sealed record MembershipEvent(double At, string Address, string Node, string From, string To);

/// <summary>
/// Polls the gateway's ops surface (<c>GET /ops/cluster</c>, loopback callers need no token) once a second and records
/// every change of a member's status or reachability; a member that vanishes from the list is recorded as Removed.
/// </summary>
internal sealed class MembershipWatcher(HttpClient http, LocalCluster cluster, Func<double> clock)
{
    private readonly Dictionary<string, string> _last = new(StringComparer.Ordinal);
    private readonly List<MembershipEvent> _events = [];

    public int Polls { get; private set; }
    public int FailedPolls { get; private set; }

    public IReadOnlyList<MembershipEvent> Events
    {
        get
        {
            lock (_events) return _events.ToList();
        }
    }

    /// <summary>Members Up and reachable in the last answer.</summary>
    public int UpReachable { get; private set; }

    public async Task RunAsync(CancellationToken ct)
    {
        while (!ct.IsCancellationRequested)
        {
            try
            {
                await PollAsync(ct).ConfigureAwait(false);
            }
            catch (Exception e) when (e is HttpRequestException or IOException or TaskCanceledException or JsonException or InvalidOperationException)
            {
                if (ct.IsCancellationRequested) break;
                FailedPolls++;
            }
            try
            {
                await Task.Delay(1000, ct).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                break;
            }
        }
    }

    private async Task PollAsync(CancellationToken ct)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(TimeSpan.FromSeconds(3));
        using var resp = await http.GetAsync("ops/cluster", timeout.Token).ConfigureAwait(false);
        resp.EnsureSuccessStatusCode();
        using var doc = JsonDocument.Parse(await resp.Content.ReadAsStringAsync(timeout.Token).ConfigureAwait(false));
        Polls++;
        double now = clock();
        var seen = new Dictionary<string, string>(StringComparer.Ordinal);
        int up = 0;
        foreach (var m in doc.RootElement.GetProperty("members").EnumerateArray())
        {
            string address = m.GetProperty("address").GetString()!;
            string status = m.GetProperty("status").GetString()!;
            bool reachable = m.GetProperty("reachable").GetBoolean();
            if (status == "Up" && reachable) up++;
            seen[address] = reachable ? status : status + " (unreachable)";
        }
        UpReachable = up;
        foreach (var (address, state) in seen)
            if (!_last.TryGetValue(address, out var before) || before != state) Add(now, address, before ?? "absent", state);
        foreach (var (address, before) in _last)
            if (!seen.ContainsKey(address)) Add(now, address, before, "Removed");
        _last.Clear();
        foreach (var kv in seen) _last[kv.Key] = kv.Value;
    }

    private void Add(double at, string address, string from, string to)
    {
        int slot = cluster.SlotOf(address);
        lock (_events) _events.Add(new MembershipEvent(at, address, slot >= 0 ? LocalCluster.NameOf(slot) : address, from, to));
    }
}
