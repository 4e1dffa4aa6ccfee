namespace MoeServer.Kernels.Residency;

/// <summary>One engine step as an expert node sees it: per layer, the experts the batch needs (each once, in the order
/// their batches run).</summary>
public sealed record StepUses(long Step, IReadOnlyList<int[]> ExpertsByLayer);
