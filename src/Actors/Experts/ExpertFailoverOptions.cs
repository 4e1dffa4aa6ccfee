using Akka.Configuration;

namespace MoeServer.Actors.Experts;

/// <summary><c>moe.experts.failover</c>: whether a gateway computes experts whose node stopped answering itself, with
/// how much memory, and how often it looks for their new home (see hocon/base.hocon).</summary>
public sealed record ExpertFailoverOptions
{
    public bool Local { get; init; } = true;
    /// <summary>Expert weights the gateway keeps materialized for failover (least recently used evicted).</summary>
    public ExpertResidencyOptions Budget { get; init; } = new() { BudgetFraction = 0.25, Policy = "lru", Prefetch = false };
    public TimeSpan ProbeInterval { get; init; } = TimeSpan.FromSeconds(1);

    public static ExpertFailoverOptions FromConfig(Config c)
    {
        var o = new ExpertFailoverOptions
        {
            Local = c.GetBoolean("moe.experts.failover.local", true),
            ProbeInterval = c.GetTimeSpan("moe.experts.failover.probe-interval", TimeSpan.FromSeconds(1)),
        };
        if (o.ProbeInterval <= TimeSpan.Zero) throw new ArgumentException("moe.experts.failover.probe-interval must be positive");
        string budget = c.GetString("moe.experts.failover.budget", "25%");
        try
        {
            return o with { Budget = ExpertResidencyOptions.ParseBudget(budget, o.Budget) };
        }
        catch (ArgumentException e)
        {
            throw new ArgumentException(e.Message.Replace("moe.experts.residency.budget", "moe.experts.failover.budget", StringComparison.Ordinal), e);
        }
    }
}
