using System.Diagnostics;
using Akka.Actor;
using Akka.Event;
using MoeServer.Actors.Scheduling;
using MoeServer.Actors.Serialization;
using MoeServer.Kernels.Model;

namespace MoeServer.Actors.Experts;

/// <summary>
/// Sends one <see cref="ExpertProtocol.RunBatch"/> per selected expert of a layer to the shard region and waits for
/// all replies. An expert that does not answer within the ask timeout is asked again (its shard may be moving to a
/// surviving node) until the retry deadline; then the step fails with an error naming the expert.
/// Runs on the scheduler's step thread, which may block.
/// </summary>
public sealed class ExpertDispatcher(IActorRef region, ExpertOptions options, long maxFrameBytes, ILoggingAdapter log)
{
    /// <summary>Since when each expert has not been answering (across steps: a request that was paused while a step
    /// gave up on the expert must not wait a whole new deadline). Used from the step thread only.</summary>
    private readonly Dictionary<ExpertId, DateTime> _failingSince = new();

    public float[][] Run(MoeLayerWork work, long stepId, Func<int[], string[]> requestIdsOfRows, StepTimings timings)
    {
        var groups = work.Routing.Groups;
        var results = new float[groups.Count][];
        var messages = new ExpertProtocol.RunBatch[groups.Count];
        for (int i = 0; i < groups.Count; i++)
        {
            var g = groups[i];
            var block = new ActivationBlock(g.Rows.Length, work.Width, work.GroupInput(i));
            long bytes = ExpertMessageSerializer.EstimateBytes(block, options.WireDType) + ExpertMessageSerializer.EnvelopeHeadroom;
            if (bytes > maxFrameBytes)
                throw new MessageTooLargeException($"RunBatch for expert {work.Layer}.{g.Expert} ({g.Rows.Length} rows) needs {bytes} bytes, " +
                    $"over the remote frame of {maxFrameBytes} bytes; lower moe.scheduler.max-batch-tokens or raise akka.remote.dot-netty.tcp.maximum-frame-size");
            messages[i] = new ExpertProtocol.RunBatch(new ExpertId(work.Layer, g.Expert), stepId, block, requestIdsOfRows(g.Rows));
        }

        var sw = Stopwatch.StartNew();
        double compute = 0;
        var pending = Enumerable.Range(0, groups.Count).ToList();
        while (true)
        {
            var attemptStart = DateTime.UtcNow;
            var asks = pending.Select(i => region.Ask<object>(messages[i], options.AskTimeout)).ToArray();
            try
            {
                Task.WaitAll(asks);
            }
            catch (AggregateException)
            {
                // Inspected per task below.
            }
            var retry = new List<int>();
            for (int j = 0; j < asks.Length; j++)
            {
                int i = pending[j];
                var t = asks[j];
                if (t.IsCompletedSuccessfully && t.Result is ExpertProtocol.BatchDone done)
                {
                    if (done.Output.Rows != messages[i].Input.Rows)
                        throw new ExpertUnavailableException($"expert {done.Expert} returned {done.Output.Rows} rows for {messages[i].Input.Rows}");
                    results[i] = done.Output.Data;
                    compute += done.ComputeMs;
                    _failingSince.Remove(done.Expert);
                }
                else if (t.IsCompletedSuccessfully && t.Result is ExpertProtocol.BatchFailed failed)
                {
                    throw new ExpertUnavailableException(failed.Reason);
                }
                else
                {
                    retry.Add(i);
                    var id = messages[i].Expert;
                    if (!_failingSince.TryGetValue(id, out var since) || attemptStart < since) _failingSince[id] = attemptStart;
                }
            }
            timings.ExpertBatches += asks.Length - retry.Count;
            if (retry.Count == 0) break;
            string names = string.Join(", ", retry.Select(i => messages[i].Expert.EntityId));
            string requests = string.Join(",", retry.SelectMany(i => messages[i].RequestIds).Distinct());
            var outage = DateTime.UtcNow - retry.Min(i => _failingSince[messages[i].Expert]);
            if (outage >= options.RetryDeadline)
                throw new ExpertUnavailableException(
                    $"expert {names} did not answer for {options.RetryDeadline.TotalSeconds:F0} s (step {stepId}): " +
                    "no node with role 'expert' is hosting it");
            log.Warning("[{0}] expert {1} did not answer within {2} s (step {3}); asking again", requests, names,
                options.AskTimeout.TotalSeconds, stepId);
            timings.ExpertRetries += retry.Count;
            pending = retry;
        }
        double wall = sw.Elapsed.TotalMilliseconds;
        timings.ExpertComputeMs += compute;
        timings.MessagingMs += Math.Max(0, wall - compute);
        return results;
    }
}
