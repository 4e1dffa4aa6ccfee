namespace MoeServer.Bench.Chaos;

/// <summary>What the schedule did (kill, hang, resume, restart) or saw happen to a node (exit, forced-kill, finding).</summary>
internal sealed record FaultEvent(double At, string Kind, string Node, int Incarnation, string Detail, int? ExitCode = null);

/// <summary>
/// The seeded chaos schedule: every 20-40 s (seeded) it kills (SIGKILL) or hangs (SIGSTOP, SIGCONT 30 s later), in turn, or restarts
/// an expert node, choosing among what the cluster's state allows; at least one expert node is always left untouched,
/// so every failed request counts against the target. A hung node that resumes is expected to exit by itself (it was
/// downed meanwhile): its exit code is recorded, and one still running 60 s after SIGCONT is a finding and is killed.
/// Restarts start a new process on the same ports once the old one has exited.
/// </summary>
internal sealed class ChaosSchedule(LocalCluster cluster, int seed, Func<double> clock, Action<string> log)
{
    public static readonly TimeSpan HangFor = TimeSpan.FromSeconds(30);
    public static readonly TimeSpan ExitAfterResumeWithin = TimeSpan.FromSeconds(60);
    public static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(120);

    private enum SlotState { Healthy, Starting, Hung, Resumed, Dead }

    private readonly Random _rng = new(seed);
    private readonly List<FaultEvent> _events = [];
    private readonly List<Task> _background = [];
    private SlotState[] _state = [];
    private int _faults;

    public IReadOnlyList<FaultEvent> Events
    {
        get
        {
            lock (_events) return _events.ToList();
        }
    }

    public int FaultCount
    {
        get
        {
            lock (_events) return _events.Count(e => e.Kind is "kill" or "hang");
        }
    }

    /// <summary>Nodes that are neither stopped, resuming, dead nor starting.</summary>
    public int HealthyExperts
    {
        get
        {
            lock (_events) return _state.Skip(1).Count(s => s == SlotState.Healthy);
        }
    }

    public async Task RunAsync(double until, CancellationToken ct)
    {
        lock (_events) _state = Enumerable.Repeat(SlotState.Healthy, cluster.Nodes).ToArray();
        var watchExits = Task.Run(() => WatchUnexpectedExitsAsync(ct), CancellationToken.None);
        try
        {
            while (!ct.IsCancellationRequested)
            {
                double wait = 20 + 20 * _rng.NextDouble();
                if (clock() + wait >= until) break;
                await Task.Delay(TimeSpan.FromSeconds(wait), ct).ConfigureAwait(false);
                Step(ct);
            }
        }
        catch (OperationCanceledException)
        {
        }
        // Resumes and restarts already under way finish (or give up) on their own timeouts.
        Task[] pending;
        lock (_events) pending = _background.ToArray();
        await Task.WhenAll(pending).ConfigureAwait(false);
        await watchExits.ConfigureAwait(false);
    }

    private void Step(CancellationToken ct)
    {
        var options = new List<(string Kind, int Slot)>();
        lock (_events)
        {
            var healthy = Enumerable.Range(1, cluster.Nodes - 1).Where(s => _state[s] == SlotState.Healthy).ToList();
            foreach (int s in Enumerable.Range(1, cluster.Nodes - 1).Where(s => _state[s] == SlotState.Dead)) options.Add(("restart", s));
            // Faults alternate kill, hang, kill, ... (the node is the seed's choice): a seed alone once gave hangs only.
            string fault = _faults % 2 == 0 ? "kill" : "hang";
            if (healthy.Count >= 2)
                foreach (int s in healthy) options.Add((fault, s));
        }
        if (options.Count == 0)
        {
            log("schedule: nothing to do (every other expert node is already down or recovering)");
            return;
        }
        // A dead node is restarted or a new fault starts, even odds; the node is drawn from the seed.
        var restarts = options.Where(o => o.Kind == "restart").ToList();
        var faults = options.Where(o => o.Kind != "restart").ToList();
        var pool = restarts.Count > 0 && (faults.Count == 0 || _rng.Next(2) == 0) ? restarts : faults;
        var (kind, slot) = pool[_rng.Next(pool.Count)];
        if (kind != "restart") _faults++;
        var node = cluster.Current(slot)!;
        switch (kind)
        {
            case "kill":
                SetState(slot, SlotState.Dead); // first, so the exit watcher does not take the kill for a crash
                node.Signal(NodeProcess.SigKill);
                Record(kind, node, "SIGKILL");
                Background(async () =>
                {
                    await node.WaitForExitAsync(TimeSpan.FromSeconds(30)).ConfigureAwait(false);
                    Record("exit", node, "after SIGKILL", node.ExitCode);
                });
                break;
            case "hang":
                node.Signal(NodeProcess.SigStop);
                Record(kind, node, "SIGSTOP");
                SetState(slot, SlotState.Hung);
                Background(() => ResumeAsync(slot, node, ct));
                break;
            case "restart":
                Background(() => RestartAsync(slot));
                break;
        }
    }

    private async Task ResumeAsync(int slot, NodeProcess node, CancellationToken ct)
    {
        try
        {
            await Task.Delay(HangFor, ct).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // the run is over: resume it anyway, so the exit-on-resume behaviour is still observed
        }
        node.Signal(NodeProcess.SigCont);
        Record("resume", node, "SIGCONT");
        SetState(slot, SlotState.Resumed);
        if (await node.WaitForExitAsync(ExitAfterResumeWithin).ConfigureAwait(false))
        {
            Record("exit", node, $"exited by itself {clock() - At(node, "resume"):F1} s after SIGCONT", node.ExitCode);
        }
        else
        {
            Record("finding", node, $"still running {ExitAfterResumeWithin.TotalSeconds:F0} s after SIGCONT: killed by the harness");
            node.KillNow();
            Record("forced-kill", node, "SIGKILL", node.ExitCode);
        }
        SetState(slot, SlotState.Dead);
    }

    private async Task RestartAsync(int slot)
    {
        SetState(slot, SlotState.Starting);
        var node = cluster.Start(slot);
        Record("restart", node, $"pid {node.Pid}");
        try
        {
            await LocalCluster.WaitListeningAsync(node, StartTimeout).ConfigureAwait(false);
            Record("listening", node, "HTTP up");
            SetState(slot, SlotState.Healthy);
        }
        catch (InvalidOperationException e)
        {
            Record("restart-failed", node, e.Message.Split('\n')[0], node.ExitCode);
            node.KillNow();
            SetState(slot, SlotState.Dead);
        }
    }

    /// <summary>A node the schedule did not touch that exits anyway is a finding (and is restarted later).</summary>
    private async Task WatchUnexpectedExitsAsync(CancellationToken ct)
    {
        while (!ct.IsCancellationRequested)
        {
            for (int s = 0; s < cluster.Nodes; s++)
            {
                bool healthy;
                lock (_events) healthy = _state[s] == SlotState.Healthy;
                if (healthy && cluster.Current(s) is { HasExited: true } n)
                {
                    Record("unexpected-exit", n, "exited without being killed or hung", n.ExitCode);
                    SetState(s, SlotState.Dead);
                }
            }
            try
            {
                await Task.Delay(500, ct).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                break;
            }
        }
    }

    private double At(NodeProcess node, string kind)
    {
        lock (_events) return _events.Last(e => e.Kind == kind && e.Node == node.Name && e.Incarnation == node.Incarnation).At;
    }

    private void SetState(int slot, SlotState s)
    {
        lock (_events) _state[slot] = s;
    }

    private void Background(Func<Task> work)
    {
        lock (_events) _background.Add(Task.Run(work));
    }

    private void Record(string kind, NodeProcess node, string detail, int? exitCode = null)
    {
        var e = new FaultEvent(clock(), kind, node.Name, node.Incarnation, detail, exitCode);
        lock (_events) _events.Add(e);
        log($"{kind} {node.Name}#{node.Incarnation} ({detail}{(exitCode is { } c ? $", exit code {c}" : "")})");
    }
}
