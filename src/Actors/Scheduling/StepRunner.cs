using System.Diagnostics;
using MoeServer.Actors.Experts;
using MoeServer.Kernels.Model;
using MoeServer.Kernels.Residency;
using TorchSharp;
using static TorchSharp.torch;

namespace MoeServer.Actors.Scheduling;

/// <summary>
/// Runs one step of the model for a plan on the node's compute thread: embeddings, then per layer attention (here, where the
/// KV caches live), the gate, the routed experts through <see cref="ExpertDispatcher"/>, and the combine; finally the
/// LM head for the rows that need next-token logits.
/// </summary>
internal sealed class StepRunner(MoeModel model, ExpertDispatcher experts, Generation.EngineGauges gauges, SchedulerOptions options)
{
    private volatile RoutingTrace? _trace;

    /// <summary>Where every step's routing is recorded while set (the scheduler sets it; steps read it once).</summary>
    public RoutingTrace? Trace
    {
        get => _trace;
        set => _trace = value;
    }

    public StepResult Run(StepPlan plan)
    {
        var timings = new StepTimings { Steps = 1, Tokens = plan.TotalTokens };
        using var span = EngineTracing.Source.HasListeners() ? StartSpan(plan) : null;
        var routing = new int[][]?[plan.Segments.Count];
        try
        {
            var trace = _trace;
            var rowsByLayer = trace is null ? null : new int[model.Config.NumLayers][][];
            var logits = Forward(plan, routing, rowsByLayer, timings);
            if (trace is not null)
            {
                for (int l = 0; l < rowsByLayer!.Length; l++) rowsByLayer[l] ??= [];
                trace.Append(new TraceStep(plan.StepId,
                    plan.Segments.Select(s => new TraceSegment(s.Sequence.Id, s.Tokens.Length, s.IsPrefill)).ToArray(), rowsByLayer));
            }
            return new StepResult(plan, logits, routing, null, timings);
        }
        catch (Exception ex)
        {
            return new StepResult(plan, new float[]?[plan.Segments.Count], routing, ex, timings);
        }
    }

    private float[]?[] Forward(StepPlan plan, int[][]?[] routing, int[][][]? rowsByLayer, StepTimings timings)
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

        // Rows whose logits the step produces; the experts they were routed to go out with their tokens.
        var logitRows = new List<int>();
        for (int s = 0; s < plan.Segments.Count; s++)
        {
            if (!plan.Segments[s].NeedsLogits) continue;
            logitRows.Add(batch.RowStart[s] + plan.Segments[s].Tokens.Length - 1);
            routing[s] = new int[model.Config.NumLayers][];
            Array.Fill(routing[s]!, []);
        }

        Tensor x = model.Embed(batch);
        var speculations = new List<SpeculativeRouting>();
        bool speculate = !model.CanPreGate && options.SpeculativeHorizon > 0;
        try
        {
            timings.EmbedAndHeadMs += Lap();
            if (model.CanPreGate)
            {
                // Exact pre-gating: the whole step's experts are known now; expert nodes may load them ahead.
                experts.Announce(plan.StepId, model.StepExperts(batch));
                timings.PreGateMs += Lap();
            }
            else if (plan.PreGate is { } predicted)
            {
                // Layer-wise: the decode rows' predicted experts, where the prediction has been holding.
                var likely = predicted.Layers.Select(l => l.Where(kv => kv.Value.Confidence >= options.AnnounceConfidence)
                    .Select(kv => kv.Key).Order().ToArray()).ToArray();
                if (likely.Any(l => l.Length > 0)) experts.Announce(plan.StepId, likely);
            }
            for (int l = 0; l < model.Config.NumLayers; l++)
            {
                Replace(ref x, model.AttentionBlock(l, x, batch));
                timings.AttentionMs += Lap();
                if (speculate)
                {
                    // Speculative lookahead: the next layers' gates on this hidden state predict their experts.
                    var spec = model.SpeculateExperts(l, x, batch, options.SpeculativeHorizon);
                    var predicted = new int[model.Config.NumLayers][];
                    Array.Fill(predicted, []);
                    foreach (var p in spec.Layers) predicted[p.Layer] = p.NeededExperts;
                    experts.Announce(plan.StepId, predicted);
                    speculations.Add(spec);
                    timings.SpeculationMs += Lap();
                }
                if (!model.Weights.Layers[l].IsSparse)
                {
                    Replace(ref x, model.MlpBlock(l, x, batch));
                    timings.GateMs += Lap();
                    continue;
                }
                using var work = model.BeginMoe(l, x, batch);
                timings.GateMs += Lap();
                foreach (var spec in speculations) gauges.Speculation.Record(spec, work.Routing);
                foreach (var g in work.Routing.Groups) gauges.AddRouted(l, g.Expert, g.Rows.Length);
                if (rowsByLayer is not null) rowsByLayer[l] = work.Routing.ExpertsOfToken;
                for (int s = 0; s < plan.Segments.Count; s++)
                    if (routing[s] is { } r) r[l] = work.Routing.ExpertsOfToken[batch.RowStart[s] + plan.Segments[s].Tokens.Length - 1];
                var outputs = experts.Run(work, plan.StepId, RequestIdsOf, timings);
                Lap();
                Replace(ref x, model.FinishMoe(work, x, outputs));
                timings.GateMs += Lap();
            }
            var result = new float[]?[plan.Segments.Count];
            if (logitRows.Count > 0)
            {
                using var logits = model.Logits(x, logitRows.ToArray());
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

    private static System.Diagnostics.Activity? StartSpan(StepPlan plan)
    {
        var links = plan.Segments.Select(s => s.Sequence.Request.TraceParent)
            .Where(t => t is not null).Distinct()
            .Select(t => System.Diagnostics.ActivityContext.TryParse(t, null, out var c) ? new System.Diagnostics.ActivityLink(c) : default)
            .Where(l => l.Context != default).ToArray();
        // A step serves many requests: it starts its own trace, linked to theirs.
        var span = EngineTracing.Source.StartActivity("moe.step", System.Diagnostics.ActivityKind.Internal, parentContext: default, links: links);
        span?.SetTag("moe.step_id", plan.StepId);
        span?.SetTag("moe.tokens", plan.TotalTokens);
        span?.SetTag("moe.request_ids", string.Join(",", plan.Segments.Select(s => s.Sequence.Id)));
        return span;
    }

    private static void Replace(ref Tensor x, Tensor next)
    {
        x.Dispose();
        x = next;
    }
}
