namespace MoeServer.Actors.Scheduling;

/// <summary>Where a step's time went (milliseconds), accumulated over steps for the engine's statistics.</summary>
public sealed class StepTimings
{
    public double EmbedAndHeadMs { get; set; }
    public double AttentionMs { get; set; }
    /// <summary>Norm + router + top-k grouping, and combining the expert outputs (incl. shared experts / dense MLPs).</summary>
    public double GateMs { get; set; }
    /// <summary>Sum of the experts' own FFN time.</summary>
    public double ExpertComputeMs { get; set; }
    /// <summary>Expert round trips beyond the FFN time: messaging, routing, serialization, waiting.</summary>
    public double MessagingMs { get; set; }
    public double SamplingMs { get; set; }
    /// <summary>Running the decoupled router over just-sampled tokens (exact pre-gating).</summary>
    public double PreGateMs { get; set; }
    /// <summary>Applying later layers' gates to predict their experts (speculative lookahead).</summary>
    public double SpeculationMs { get; set; }
    public long Steps { get; set; }
    public long Tokens { get; set; }
    public long ExpertBatches { get; set; }
    public long ExpertRetries { get; set; }
    /// <summary>Expert batches the gateway computed itself because their shard did not answer (moe.experts.failover).</summary>
    public long FailoverBatches { get; set; }

    public void Add(StepTimings o)
    {
        EmbedAndHeadMs += o.EmbedAndHeadMs;
        AttentionMs += o.AttentionMs;
        GateMs += o.GateMs;
        ExpertComputeMs += o.ExpertComputeMs;
        MessagingMs += o.MessagingMs;
        SamplingMs += o.SamplingMs;
        PreGateMs += o.PreGateMs;
        SpeculationMs += o.SpeculationMs;
        Steps += o.Steps;
        Tokens += o.Tokens;
        ExpertBatches += o.ExpertBatches;
        ExpertRetries += o.ExpertRetries;
        FailoverBatches += o.FailoverBatches;
    }

    public StepTimings Clone()
    {
        var c = new StepTimings();
        c.Add(this);
        return c;
    }
}
