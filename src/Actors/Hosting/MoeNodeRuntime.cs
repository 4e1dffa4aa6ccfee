using MoeServer.Actors.Generation;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Model;
using MoeServer.Kernels.Tokenization;

namespace MoeServer.Actors.Hosting;

/// <summary>What a started node holds: its settings, status, the model parts it serves and (gateway) the engine.</summary>
public sealed class MoeNodeRuntime : IDisposable
{
    internal MoeNodeRuntime(MoeSettings settings, ModelConfig config, string fingerprint, NodeStatus status)
    {
        Settings = settings;
        Config = config;
        Fingerprint = fingerprint;
        Status = status;
    }

    public MoeSettings Settings { get; }
    public ModelConfig Config { get; }
    public string Fingerprint { get; }
    public NodeStatus Status { get; }
    /// <summary>Backbone weights (gateway roles).</summary>
    public MoeModel? Model { get; internal set; }
    public ITokenizer? Tokenizer { get; internal set; }
    public Experts.ExpertWeightSource? ExpertWeights { get; internal set; }
    /// <summary>Work of the expert entities hosted here (expert roles).</summary>
    public Experts.ExpertWorkCounters? ExpertWork { get; internal set; }
    /// <summary>Which expert weights this node keeps materialized (expert roles).</summary>
    public Experts.ExpertResidency? ExpertResidency { get; internal set; }
    /// <summary>The gateway's own copy of experts whose node stopped answering (gateway roles, moe.experts.failover).</summary>
    public Experts.ExpertFailover? ExpertFailover { get; internal set; }
    internal Experts.ExpertWeightSource? FailoverWeights { get; set; }
    internal Cluster.PauseFence? PauseFence { get; set; }
    public MoeEngine? Engine { get; internal set; }
    public Akka.Actor.IActorRef? ExpertRegion { get; internal set; }
    /// <summary>Bytes the remote transport's frame allows (sized for the largest expert batch).</summary>
    public long MaxFrameBytes { get; internal set; }

    public void Dispose()
    {
        PauseFence?.Dispose();
        Model?.Dispose();
        ExpertResidency?.Dispose();
        ExpertWeights?.Dispose();
        ExpertFailover?.Dispose();
        FailoverWeights?.Dispose();
    }
}
