namespace MoeServer.Actors.Hosting;

/// <summary>Where this node is in its life, for /health and /ready.</summary>
public enum NodePhase
{
    Starting,
    Joining,
    Up,
    /// <summary>The cluster serves a different checkpoint: this node will not join.</summary>
    Refused,
    Leaving,
}

/// <summary>Readiness of this node: written by the cluster and warm-up code, read by health endpoints.</summary>
public sealed class NodeStatus
{
    private readonly object _gate = new();
    private NodePhase _phase = NodePhase.Starting;
    private string _reason = "starting";
    private bool _expertsAnswered;
    private readonly TaskCompletionSource _downed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public NodeStatus(NodeRole role) => Role = role;

    public NodeRole Role { get; }
    public string Fingerprint { get; set; } = "";
    public string Address { get; set; } = "";

    public NodePhase Phase
    {
        get
        {
            lock (_gate) return _phase;
        }
    }

    public void Set(NodePhase phase, string reason)
    {
        lock (_gate)
        {
            if (_phase == NodePhase.Refused) return; // final
            _phase = phase;
            _reason = reason;
        }
    }

    /// <summary>The cluster downed this node (it leaves with <see cref="Cluster.NodeExitCodes.DownedByCluster"/>).</summary>
    public bool DownedByCluster => _downed.Task.IsCompleted;

    /// <summary>Completes when the cluster downs this node.</summary>
    public Task WhenDowned => _downed.Task;

    public void MarkDowned()
    {
        Set(NodePhase.Leaving, "downed by the cluster");
        _downed.TrySetResult();
    }

    /// <summary>Every expert entity answered a ping (gateway nodes).</summary>
    public void SetExpertsAnswered(bool answered)
    {
        lock (_gate) _expertsAnswered = answered;
    }

    public (bool Ready, string Reason) Readiness()
    {
        lock (_gate)
        {
            if (_phase != NodePhase.Up) return (false, _reason);
            if (Role.RunsGateway() && !_expertsAnswered) return (false, "waiting for every expert entity to answer");
            return (true, "ready");
        }
    }
}
