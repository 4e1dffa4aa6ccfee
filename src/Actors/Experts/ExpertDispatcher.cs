using System.Diagnostics;
using Akka.Actor;
using Akka.Event;
using MoeServer.Actors.Compute;
using MoeServer.Actors.Scheduling;
using MoeServer.Actors.Serialization;
using MoeServer.Kernels.Model;

namespace MoeServer.Actors.Experts;

/// <summary>
/// Sends one <see cref="ExpertProtocol.RunBatch"/> per selected expert of a layer and waits for all replies (on the
/// compute thread, which meanwhile runs the batches of local experts). With <see cref="ExpertFailover"/> (gateways,
/// the default), an expert that does not answer within the ask timeout, or whose node the cluster reports unreachable
/// or gone, is computed on this node until a probe finds its shard again: recovery never waits on membership.
/// Without it, the expert is asked again through the shard region (its shard may be moving to a surviving node) until
/// the retry deadline, or at once when no reachable cluster member with role 'expert' is left; then the step fails
/// with an error naming the expert. Runs on the scheduler's compute thread.
/// </summary>
/// <remarks>
/// Local entities that have answered once are then sent to directly (their ref, not the region and shard hops);
/// a ref whose entity has stopped is dropped before use, and one that stops between send and receipt costs one ask
/// timeout, after which the region routes the retry. Remote entities always go through the region.
/// </remarks>
public sealed class ExpertDispatcher(IActorRef region, ExpertOptions options, long maxFrameBytes, ILoggingAdapter log,
    ExpertReplySink replies, ComputeThread thread, Func<bool> anyExpertHostReachable, Func<IReadOnlyList<ActorSelection>> residencyAgents,
    ExpertResidency? localResidency = null, ExpertFailover? failover = null, Func<string, HostHealth>? hostHealth = null)
{
    private readonly Func<string, HostHealth> _health = hostHealth ?? (_ => HostHealth.Up);

    /// <summary>Since when each expert has not been answering (across steps: a request that was paused while a step
    /// gave up on the expert must not wait a whole new deadline). Used from the compute thread only.</summary>
    private readonly Dictionary<ExpertId, DateTime> _failingSince = new();
    private readonly Dictionary<ExpertId, IInternalActorRef> _localEntities = new();

    public float[][] Run(MoeLayerWork work, long stepId, Func<int[], string[]> requestIdsOfRows, StepTimings timings)
    {
        var groups = work.Routing.Groups;
        var results = new float[groups.Count][];
        var messages = new ExpertProtocol.RunBatch[groups.Count];
        string? trace = EngineTracing.CurrentTraceParent();
        var groupOf = new Dictionary<ExpertId, int>(groups.Count);
        for (int i = 0; i < groups.Count; i++)
        {
            var g = groups[i];
            var block = new ActivationBlock(g.Rows.Length, work.Width, work.GroupInput(i));
            long bytes = ExpertMessageSerializer.EstimateBytes(block, options.WireDType) + ExpertMessageSerializer.EnvelopeHeadroom;
            if (bytes > maxFrameBytes)
                throw new MessageTooLargeException($"RunBatch for expert {work.Layer}.{g.Expert} ({g.Rows.Length} rows) needs {bytes} bytes, " +
                    $"over the remote frame of {maxFrameBytes} bytes; lower moe.scheduler.max-batch-tokens or raise akka.remote.dot-netty.tcp.maximum-frame-size");
            messages[i] = new ExpertProtocol.RunBatch(new ExpertId(work.Layer, g.Expert), stepId, block, requestIdsOfRows(g.Rows), trace);
            groupOf[messages[i].Expert] = i;
        }

        long started = Stopwatch.GetTimestamp();
        double compute = 0;
        var pending = new HashSet<int>(Enumerable.Range(0, groups.Count));
        var local = new List<int>();
        if (failover is not null)
        {
            var now = DateTime.UtcNow;
            foreach (var id in failover.DueForProbe(now)) region.Tell(new ExpertProtocol.Ping(id), replies);
            bool noHost = !anyExpertHostReachable();
            foreach (int i in pending)
                if (noHost || failover.ComputesLocally(messages[i].Expert, _health, now)) local.Add(i);
            pending.ExceptWith(local);
        }
        foreach (int i in pending) Send(messages[i], viaRegion: false);
        // Experts of nodes known to be gone or silent run here while the others' replies are on their way.
        compute += ComputeLocally(local, messages, results, stepId, timings);
        while (true)
        {
            var attemptStart = DateTime.UtcNow;
            long deadline = Stopwatch.GetTimestamp() + (long)(options.AskTimeout.TotalSeconds * Stopwatch.Frequency);
            while (pending.Count > 0 && thread.RunUntil(() => replies.HasReplies, deadline))
            {
                while (replies.TryTake(out var reply, out var sender))
                {
                    switch (reply)
                    {
                        case ExpertProtocol.BatchDone done when done.StepId == stepId && groupOf.TryGetValue(done.Expert, out int i) && pending.Remove(i):
                            if (done.Output.Rows != messages[i].Input.Rows)
                                throw new ExpertUnavailableException($"expert {done.Expert} returned {done.Output.Rows} rows for {messages[i].Input.Rows}");
                            results[i] = done.Output.Data;
                            compute += done.ComputeMs;
                            _failingSince.Remove(done.Expert);
                            if (sender is IInternalActorRef { IsLocal: true } entity) _localEntities[done.Expert] = entity;
                            else failover?.Answered(done.Expert, sender.Path.Address.ToString());
                            timings.ExpertBatches++;
                            break;
                        case ExpertProtocol.Pong pong when failover is not null && pong.Loaded:
                            failover.Answered(pong.Expert, pong.Node); // a probe found the expert's shard (again)
                            break;
                        case ExpertProtocol.BatchFailed failed when failed.StepId == stepId && groupOf.ContainsKey(failed.Expert):
                            throw new ExpertUnavailableException(failed.Reason);
                        default:
                            break; // a late reply to an earlier attempt or step
                    }
                }
            }
            if (pending.Count == 0) break;

            if (failover is not null)
            {
                // Recovery bounded by the ask timeout: the silent experts run here, and probes find their new home.
                string silent = string.Join(", ", pending.Select(i => messages[i].Expert.EntityId));
                log.Warning("[{0}] expert {1} did not answer within {2} s (step {3}); computing it on this node until its shard answers again",
                    string.Join(",", pending.SelectMany(i => messages[i].RequestIds).Distinct()), silent, options.AskTimeout.TotalSeconds, stepId);
                failover.TimedOut(pending.Select(i => messages[i].Expert), DateTime.UtcNow);
                timings.ExpertRetries += pending.Count;
                compute += ComputeLocally(pending.ToList(), messages, results, stepId, timings);
                break;
            }
            foreach (int i in pending)
            {
                var id = messages[i].Expert;
                if (!_failingSince.TryGetValue(id, out var since) || attemptStart < since) _failingSince[id] = attemptStart;
            }
            string names = string.Join(", ", pending.Select(i => messages[i].Expert.EntityId));
            string requests = string.Join(",", pending.SelectMany(i => messages[i].RequestIds).Distinct());
            var outage = DateTime.UtcNow - pending.Min(i => _failingSince[messages[i].Expert]);
            if (outage >= options.RetryDeadline)
                throw new ExpertUnavailableException(
                    $"expert {names} did not answer for {options.RetryDeadline.TotalSeconds:F0} s (step {stepId}): " +
                    "no node with role 'expert' is hosting it");
            if (!anyExpertHostReachable())
                throw new ExpertUnavailableException(
                    $"expert {names} did not answer (step {stepId}): no reachable cluster member with role 'expert' is left");
            log.Warning("[{0}] expert {1} did not answer within {2} s (step {3}); asking again", requests, names,
                options.AskTimeout.TotalSeconds, stepId);
            timings.ExpertRetries += pending.Count;
            foreach (int i in pending) Send(messages[i], viaRegion: true);
        }
        double wall = Stopwatch.GetElapsedTime(started).TotalMilliseconds;
        timings.ExpertComputeMs += compute;
        timings.MessagingMs += Math.Max(0, wall - compute);
        return results;
    }

    /// <summary>Runs the given groups on this node's failover copy of their experts; returns the FFN time.</summary>
    private double ComputeLocally(List<int> groups, ExpertProtocol.RunBatch[] messages, float[][] results, long stepId, StepTimings timings)
    {
        if (groups.Count == 0) return 0;
        long t0 = Stopwatch.GetTimestamp();
        foreach (int i in groups)
        {
            var m = messages[i];
            try
            {
                results[i] = failover!.Compute(m.Expert, m.Input, stepId);
            }
            catch (Exception e) when (e is IOException or MoeServer.Kernels.Formats.CheckpointFormatException or ArgumentException or OutOfMemoryException)
            {
                throw new ExpertUnavailableException($"expert {m.Expert.EntityId} could not be computed on this node while its shard " +
                    $"is unreachable (step {stepId}): {e.Message}");
            }
            timings.ExpertBatches++;
            timings.FailoverBatches++;
        }
        return Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
    }

    /// <summary>Tells every expert node's residency (the other nodes' through their agents) which experts step
    /// <paramref name="stepId"/> is expected to run (no reply; they may prefetch the ones they host).</summary>
    public void Announce(long stepId, int[][] expertsByLayer)
    {
        // This node's own experts learn it at once (before any of the step's batches can reach them).
        if (localResidency is not null)
            for (int l = 0; l < expertsByLayer.Length; l++)
                if (expertsByLayer[l].Length > 0) localResidency.Announce(stepId, l, expertsByLayer[l]);
        var message = new ExpertProtocol.AnnounceStep(stepId, expertsByLayer);
        foreach (var agent in residencyAgents()) agent.Tell(message, ActorRefs.NoSender);
    }

    private void Send(ExpertProtocol.RunBatch message, bool viaRegion)
    {
        if (!viaRegion && _localEntities.TryGetValue(message.Expert, out var entity))
        {
            // IsTerminated is a racy hint (hence obsolete in Akka): a stop after this check costs one ask timeout.
#pragma warning disable CS0618
            bool stopped = entity.IsTerminated;
#pragma warning restore CS0618
            if (!stopped)
            {
                entity.Tell(message, replies);
                return;
            }
            _localEntities.Remove(message.Expert);
        }
        else if (viaRegion)
        {
            _localEntities.Remove(message.Expert);
        }
        region.Tell(message, replies);
    }
}
