using System.Diagnostics;
using MoeServer.Actors.Experts;
using MoeServer.Kernels.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace MoeServer.Actors.Scheduling;

/// <summary>
/// Runs one step of the model for a plan on the node's compute thread: embeddings, then per layer attention (here, where the
/// KV caches live), the gate, the routed experts through <see cref="ExpertDispatcher"/>, and the combine; finally the
/// LM head for the rows that need next-token logits.
/// </summary>
internal sealed class StepRunner(MoeModel model, ExpertDispatcher experts)
{
    public StepResult Run(StepPlan plan)
    {
        var timings = new StepTimings { Steps = 1, Tokens = plan.TotalTokens };
        try
        {
            return new StepResult(plan, Forward(plan, timings), null, timings);
        }
        catch (Exception ex)
        {
            return new StepResult(plan, new float[]?[plan.Segments.Count], ex, timings);
        }
    }

    private float[]?[] Forward(StepPlan plan, StepTimings timings)
    {
        var batch = new BatchLayout(plan.Segments.Select(s => new BatchSegment(s.Sequence.Cache!, s.Tokens, s.Sequence.Request.Routing)).ToArray());
        var rowOwner = batch.SegmentOfRow.Select(s => plan.Segments[s].Sequence.Id).ToArray();
        string[] RequestIdsOf(int[] rows) => rows.Select(r => rowOwner[r]).Distinct().ToArray();
        TorchRuntime.UseThreadsFor(batch.TotalTokens);
        using var noGrad = torch.no_grad();
        long t = Stopwatch.GetTimestamp();
        double Lap()
        {
            long now = Stopwatch.GetTimestamp();
            double ms = Stopwatch.GetElapsedTime(t, now).TotalMilliseconds;
            t = now;
            return ms;
        }

        Tensor x = model.Embed(batch);
        try
        {
            timings.EmbedAndHeadMs += Lap();
            for (int l = 0; l < model.Config.NumLayers; l++)
            {
                Replace(ref x, model.AttentionBlock(l, x, batch));
                timings.AttentionMs += Lap();
                if (!model.Weights.Layers[l].IsSparse)
                {
                    Replace(ref x, model.MlpBlock(l, x, batch));
                    timings.GateMs += Lap();
                    continue;
                }
                using var work = model.BeginMoe(l, x, batch);
                timings.GateMs += Lap();
                var outputs = experts.Run(work, plan.StepId, RequestIdsOf, timings);
                Lap();
                Replace(ref x, model.FinishMoe(work, x, outputs));
                timings.GateMs += Lap();
            }
            var rows = new List<int>();
            for (int s = 0; s < plan.Segments.Count; s++)
                if (plan.Segments[s].NeedsLogits) rows.Add(batch.RowStart[s] + plan.Segments[s].Tokens.Length - 1);
            var result = new float[]?[plan.Segments.Count];
            if (rows.Count > 0)
            {
                using var logits = model.Logits(x, rows.ToArray());
                var flat = TorchInterop.ToFloatArray(logits);
                int v = model.Config.VocabSize, k = 0;
                for (int s = 0; s < plan.Segments.Count; s++)
                    if (plan.Segments[s].NeedsLogits) result[s] = flat.AsSpan(k++ * v, v).ToArray();
            }
            MoeModel.Commit(batch);
            timings.EmbedAndHeadMs += Lap();
            return result;
        }
        finally
        {
            x.Dispose();
        }
    }

    private static void Replace(ref Tensor x, Tensor next)
    {
        x.Dispose();
        x = next;
    }
}
