namespace MoeServer.Tools.Training;

/// <summary>What <see cref="Trainer"/> trains and how. Defaults suit the small models trained on 2 CPU cores.</summary>
public sealed record TrainingOptions
{
    public required string TrainText { get; init; }
    public string? HeldOutText { get; init; }
    public required string TokenizerDir { get; init; }
    public required string OutDir { get; init; }
    public int Steps { get; init; } = 2000;
    public int BatchSize { get; init; } = 16;
    public int SequenceLength { get; init; } = 128;
    public double LearningRate { get; init; } = 3e-3;
    /// <summary>The cosine schedule ends at LearningRate * MinLearningRateRatio.</summary>
    public double MinLearningRateRatio { get; init; } = 0.1;
    public int WarmupSteps { get; init; } = 100;
    public double WeightDecay { get; init; } = 0.1;
    public double ClipNorm { get; init; } = 1.0;
    /// <summary>Weight of the load-balancing loss added to the cross-entropy.</summary>
    public double BalanceLossWeight { get; init; } = 0.01;
    public long Seed { get; init; } = 1;
    /// <summary>Steps between resumable checkpoints (and held-out evaluations).</summary>
    public int CheckpointEvery { get; init; } = 200;
    /// <summary>Stop (with a resumable checkpoint) after this many steps of the schedule; null = run to the end.
    /// Lets a long run be done in pieces.</summary>
    public int? StopAfter { get; init; }
    /// <summary>Windows of held-out text scored at each evaluation (0: the whole held-out text).</summary>
    public int EvalWindows { get; init; }

    /// <summary>Learning rate at a step: linear warmup, then cosine decay to the minimum.</summary>
    public double LearningRateAt(int step)
    {
        if (step < WarmupSteps) return LearningRate * (step + 1) / WarmupSteps;
        double progress = Math.Min(1.0, (double)(step - WarmupSteps) / Math.Max(1, Steps - WarmupSteps));
        double min = LearningRate * MinLearningRateRatio;
        return min + (LearningRate - min) * 0.5 * (1 + Math.Cos(Math.PI * progress));
    }
}
