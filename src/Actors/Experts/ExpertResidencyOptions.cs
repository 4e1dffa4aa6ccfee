using System.Globalization;
using Akka.Configuration;

namespace MoeServer.Actors.Experts;

/// <summary>Where an expert load reads from.</summary>
public enum StorageTier
{
    /// <summary>The memory-mapped checkpoint in the page cache: a load is read + convert + allocate (the analogue
    /// of a host-to-device copy).</summary>
    Memory,
    /// <summary>Pages are dropped from the page cache after every load, so the next load is a real disk read.</summary>
    Disk,
}

/// <summary><c>moe.experts.residency</c>: how many expert weights a node keeps materialized, and how it chooses
/// (see hocon/base.hocon for each knob).</summary>
public sealed record ExpertResidencyOptions
{
    /// <summary>Experts resident at most; null: every expert this node hosts.</summary>
    public int? BudgetExperts { get; init; }
    public long? BudgetBytes { get; init; }
    /// <summary>A share of all the model's experts (0..1].</summary>
    public double? BudgetFraction { get; init; }
    public string Policy { get; init; } = "lru";
    public StorageTier Tier { get; init; } = StorageTier.Memory;
    public bool Prefetch { get; init; } = true;
    public int PrefetchDepth { get; init; } = 4;

    public bool Unlimited => BudgetExperts is null && BudgetBytes is null && BudgetFraction is null;

    /// <summary>The budget in experts for a model of <paramref name="totalExperts"/> experts of
    /// <paramref name="expertBytes"/> each (at least one).</summary>
    public int CapacityFor(int totalExperts, long expertBytes)
    {
        if (BudgetExperts is { } n) return Math.Clamp(n, 1, totalExperts);
        if (BudgetBytes is { } b) return (int)Math.Clamp(b / Math.Max(1, expertBytes), 1, totalExperts);
        if (BudgetFraction is { } f) return Math.Clamp((int)Math.Round(f * totalExperts), 1, totalExperts);
        return totalExperts;
    }

    public static ExpertResidencyOptions FromConfig(Config c)
    {
        string budget = c.GetString("moe.experts.residency.budget", "all").Trim();
        var o = new ExpertResidencyOptions
        {
            Policy = c.GetString("moe.experts.residency.policy", "lru").Trim().ToLowerInvariant(),
            Tier = c.GetString("moe.experts.residency.tier", "memory").Trim().ToLowerInvariant() switch
            {
                "memory" => StorageTier.Memory,
                "disk" => StorageTier.Disk,
                var t => throw new ArgumentException($"moe.experts.residency.tier: unknown '{t}' (expected memory or disk)"),
            },
            Prefetch = c.GetBoolean("moe.experts.residency.prefetch", true),
            PrefetchDepth = c.GetInt("moe.experts.residency.prefetch-depth", 4),
        };
        o = ParseBudget(budget, o);
        if (o.Policy is not ("lru" or "lfu" or "lookahead"))
            throw new ArgumentException($"moe.experts.residency.policy: unknown '{o.Policy}' (expected lru, lfu or lookahead)");
        if (o.PrefetchDepth < 0) throw new ArgumentException("moe.experts.residency.prefetch-depth must be >= 0");
        return o;
    }

    /// <summary>"all", a count ("16"), a share ("25%") or a size ("64 MiB").</summary>
    public static ExpertResidencyOptions ParseBudget(string budget, ExpertResidencyOptions o)
    {
        string b = budget.Trim();
        if (b.Equals("all", StringComparison.OrdinalIgnoreCase)) return o with { BudgetExperts = null, BudgetBytes = null, BudgetFraction = null };
        if (b.EndsWith('%') && double.TryParse(b[..^1], NumberStyles.Float, CultureInfo.InvariantCulture, out double pct) && pct > 0 && pct <= 100)
            return o with { BudgetFraction = pct / 100 };
        if (int.TryParse(b, NumberStyles.None, CultureInfo.InvariantCulture, out int n) && n > 0) return o with { BudgetExperts = n };
        try
        {
            long? bytes = ConfigurationFactory.ParseString($"x = \"{b}\"").GetByteSize("x");
            if (bytes is > 0) return o with { BudgetBytes = bytes };
        }
        catch (Exception)
        {
            // fall through to the error naming the knob
        }
        throw new ArgumentException($"moe.experts.residency.budget: '{budget}' is not all, a count of experts, a percentage or a size like 64 MiB");
    }
}
