namespace MoeServer.Kernels.Residency;

/// <summary>
/// How well speculative gates predicted one distance: per row, the share of a row's actual experts that were
/// predicted (token recall); per step, the share of the batch's distinct actual experts that were predicted (set
/// recall: what a prefetch of the predicted set would have had in place).
/// </summary>
public sealed record SpeculationRecallStats(
    int Distance, long Rows, long TokenHits, long TokenActual, long Steps, double SetRecallSum, long SetHits, long SetActual, long SetPredicted)
{
    /// <summary>Predicted ∩ actual over actual, pooled over all rows.</summary>
    public double TokenRecall => TokenActual == 0 ? 0 : (double)TokenHits / TokenActual;
    /// <summary>The mean over steps of each step's set recall.</summary>
    public double SetRecall => Steps == 0 ? 0 : SetRecallSum / Steps;
    /// <summary>Share of the predicted distinct experts that were used (1 - the share a prefetch would load in vain).</summary>
    public double SetPrecision => SetPredicted == 0 ? 0 : (double)SetHits / SetPredicted;
}
