using System.Diagnostics;
using System.Text.Json;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Formats;
using MoeServer.Kernels.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace MoeServer.Tools.Training;

/// <summary>
/// Trains a <see cref="MoeTrainingModel"/>: AdamW, linear warmup + cosine schedule, gradient clipping, cross-entropy
/// plus the load-balancing loss, a progress line with loss and tokens/s, held-out perplexity at every checkpoint, and
/// resumable checkpoints (model, optimizer and step under OutDir/resume/). Ends by exporting an HF checkpoint.
/// </summary>
public sealed class Trainer(ModelConfig config, TrainingOptions options, Action<string> log)
{
    public sealed record Result(int Steps, double FinalLoss, double? HeldOutPerplexity, double TokensPerSecond, TimeSpan Elapsed);

    private string ResumeDir => Path.Combine(options.OutDir, "resume");

    public Result Run(bool resume)
    {
        var tokenizer = HfTokenizer.Load(options.TokenizerDir);
        if (tokenizer.VocabSize > config.VocabSize)
            throw new ArgumentException($"the tokenizer has {tokenizer.VocabSize} tokens but the model's vocab_size is {config.VocabSize}");
        var train = new TokenCorpus(options.TrainText, tokenizer);
        var heldOut = options.HeldOutText is { } h ? new TokenCorpus(h, tokenizer) : null;
        log($"train: {train.Length} tokens from {options.TrainText}" + (heldOut is null ? "" : $"; held out: {heldOut.Length} tokens"));

        torch.set_num_threads(Environment.ProcessorCount);
        using var model = new MoeTrainingModel(config, options.Seed);
        using var optimizer = torch.optim.AdamW(model.parameters(), lr: options.LearningRate, weight_decay: options.WeightDecay);
        int start = 0;
        if (resume && File.Exists(Path.Combine(ResumeDir, "state.json")))
        {
            start = JsonDocument.Parse(File.ReadAllText(Path.Combine(ResumeDir, "state.json"))).RootElement.GetProperty("step").GetInt32();
            model.load(Path.Combine(ResumeDir, "model.bin"));
            optimizer.load_state_dict(Path.Combine(ResumeDir, "optimizer.bin"));
            log($"resumed at step {start} from {ResumeDir}");
        }
        long parameters = model.parameters().Sum(p => p.numel());
        log($"model: {parameters / 1e6:F2}M parameters; {options.Steps} steps of {options.BatchSize} x {options.SequenceLength} tokens");

        var progress = new ConsoleProgress("train");
        var sw = Stopwatch.StartNew();
        double loss = double.NaN, ce = double.NaN, balance = double.NaN, ppl = double.NaN;
        long tokensSeen = 0;
        model.train();
        int end = Math.Min(options.Steps, options.StopAfter ?? options.Steps);
        for (int step = start; step < end; step++)
        {
            double lr = options.LearningRateAt(step);
            foreach (var g in optimizer.ParamGroups) g.LearningRate = lr;
            using (var scope = torch.NewDisposeScope())
            {
                var ids = torch.tensor(train.Batch(options.Seed, step, options.BatchSize, options.SequenceLength),
                    [options.BatchSize, options.SequenceLength + 1]);
                var input = ids.narrow(1, 0, options.SequenceLength);
                var target = ids.narrow(1, 1, options.SequenceLength);
                optimizer.zero_grad();
                var (logits, aux) = model.forward(input);
                var xent = nn.functional.cross_entropy(logits.reshape(-1, config.VocabSize), target.reshape(-1));
                var total = xent + aux * options.BalanceLossWeight;
                total.backward();
                nn.utils.clip_grad_norm_(model.parameters(), options.ClipNorm);
                optimizer.step();
                loss = total.item<float>();
                ce = xent.item<float>();
                balance = aux.item<float>();
            }
            tokensSeen += (long)options.BatchSize * options.SequenceLength;
            double tps = tokensSeen / Math.Max(1e-9, sw.Elapsed.TotalSeconds);
            progress.Report(step + 1, options.Steps, $"loss {ce:F3} balance {balance:F2} lr {lr:G2} {tps:F0} tok/s");
            bool last = step + 1 == options.Steps;
            if ((step + 1) % options.CheckpointEvery == 0 || step + 1 == end)
            {
                if (heldOut is not null)
                {
                    ppl = Perplexity(model, heldOut);
                    model.train();
                }
                SaveResume(model, optimizer, step + 1);
                if (!last) log($"\nstep {step + 1}: loss {ce:F3}" + (heldOut is null ? "" : $", held-out perplexity {ppl:F2}"));
            }
        }
        double rate = tokensSeen / Math.Max(1e-9, sw.Elapsed.TotalSeconds);
        if (end < options.Steps)
        {
            log($"\nstopped after step {end} of {options.Steps}: go on with --resume");
            return new Result(end, ce, heldOut is null ? null : ppl, rate, sw.Elapsed);
        }
        HfCheckpointExport.Write(model, options.OutDir, TensorDType.BF16, options.TokenizerDir);
        log($"wrote {options.OutDir}: final loss {ce:F3}" + (heldOut is null ? "" : $", held-out perplexity {ppl:F2}") + $", {rate:F0} tokens/s");
        return new Result(options.Steps, ce, heldOut is null ? null : ppl, rate, sw.Elapsed);
    }

    /// <summary>exp(mean cross-entropy) over consecutive held-out windows of the training length.</summary>
    public double Perplexity(MoeTrainingModel model, TokenCorpus text)
    {
        model.eval();
        using var noGrad = torch.no_grad();
        double sum = 0;
        long count = 0;
        foreach (var window in text.Windows(options.SequenceLength, options.EvalWindows))
        {
            using var scope = torch.NewDisposeScope();
            var ids = torch.tensor(window, [1, window.Length]);
            var (logits, _) = model.forward(ids.narrow(1, 0, window.Length - 1));
            var xent = nn.functional.cross_entropy(logits.reshape(-1, config.VocabSize), ids.narrow(1, 1, window.Length - 1).reshape(-1),
                reduction: nn.Reduction.Sum);
            sum += xent.item<float>();
            count += window.Length - 1;
        }
        return Math.Exp(sum / Math.Max(1, count));
    }

    private void SaveResume(MoeTrainingModel model, TorchSharp.Modules.AdamW optimizer, int step)
    {
        Directory.CreateDirectory(ResumeDir);
        model.save(Path.Combine(ResumeDir, "model.bin"));
        optimizer.save_state_dict(Path.Combine(ResumeDir, "optimizer.bin"));
        File.WriteAllText(Path.Combine(ResumeDir, "state.json"), JsonSerializer.Serialize(new { step, seed = options.Seed }));
    }
}
