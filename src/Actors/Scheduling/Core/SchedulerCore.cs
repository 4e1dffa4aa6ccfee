using System.Collections.Immutable;
using MoeServer.Kernels.Generation;
using MoeServer.Kernels.Model.Paging;
using static MoeServer.Actors.Scheduling.SchedulerProtocol;

namespace MoeServer.Actors.Scheduling.Core;

/// <summary>
/// The scheduler without Akka and without a model (vLLM v1's <c>schedule()</c> / <c>update_from_output()</c>).
/// <list type="bullet">
/// <item><see cref="Submit"/> queues a request or rejects it (duplicate id, draining, queue full, a prompt or max_tokens
/// that could not fit in the context or in the whole KV pool even alone).</item>
/// <item><see cref="Schedule"/> forms the next step: decode rows first (the batching policy picks when more are ready
/// than a step takes), then prefill chunks of running sequences in admission order, then new admissions while the token
/// budget, the running-sequence limit and the free KV blocks allow. Blocks are taken as sequences grow; when none are
/// left a sequence is preempted (paused ones first, then the newest running one) and recomputed later.</item>
/// <item><see cref="Update"/> takes the step's sampled tokens and the output stage's finish decisions and returns what
/// happened to each request.</item>
/// </list>
/// One step is in flight at a time; between <see cref="Schedule"/> and <see cref="Update"/> a cancelled or expired
/// request keeps its blocks (the compute thread writes them) and ends when the step's output arrives. Not thread-safe:
/// one owner (the scheduler actor) calls it.
/// </summary>
public sealed class SchedulerCore
{
    private readonly SchedulerCoreOptions _options;
    private readonly KvBlockPool _pool;
    private readonly TimeProvider _clock;
    private readonly LinkedList<CoreSequence> _waiting = new();
    private readonly List<CoreSequence> _running = [];
    private readonly Dictionary<string, CoreSequence> _byId = [];
    private ScheduledStep? _inFlight;
    private long _stepId, _arrivals, _admissions;
    private bool _draining, _drainedSent;
    private long _preemptions, _prefixLookups, _prefixHitTokens, _completed, _promptComputed, _generated;

    public SchedulerCore(SchedulerCoreOptions options, KvBlockPool pool, TimeProvider? clock = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        _options = options.Validated();
        _pool = pool ?? throw new ArgumentNullException(nameof(pool));
        _clock = clock ?? TimeProvider.System;
    }

    public KvBlockPool Pool => _pool;
    public SchedulerCoreOptions Options => _options;
    public bool StepInFlight => _inFlight is not null;
    public bool IsDraining => _draining;
    /// <summary>Nothing running or waiting.</summary>
    public bool IsIdle => _byId.Count == 0;

    public SchedulerCoreStats Stats => new(_running.Count, _waiting.Count, _byId.Values.Count(s => s.Paused), _pool.Stats,
        _preemptions, _prefixLookups, _prefixHitTokens, _completed, _promptComputed, _generated, _draining);

    /// <summary>Where a request is: waiting, prefilling, decoding or paused (null: unknown or finished).</summary>
    public string? StateOf(string requestId) => _byId.TryGetValue(requestId, out var s)
        ? !s.Running ? "waiting" : s.Paused ? "paused" : s.IsPrefilling ? "prefilling" : "decoding"
        : null;

    /// <summary>The request's tokens so far (prompt, then generated).</summary>
    public IReadOnlyList<int>? TokensOf(string requestId) => _byId.TryGetValue(requestId, out var s) ? s.Tokens.ToArray() : null;

    /// <summary>The blocks a request holds now, in position order (freed window blocks left out).</summary>
    public IReadOnlyList<int>? BlocksOf(string requestId) =>
        _byId.TryGetValue(requestId, out var s) ? s.Blocks.Where(b => b != ScheduledSegment.NoBlock).ToArray() : null;

    public IReadOnlyList<SchedulerEvent> Submit(SequenceRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        string id = request.RequestId;
        if (_draining) return [new RequestRejected(id, RejectionKind.Draining, null, "draining", "the server is shutting down and takes no new requests")];
        if (string.IsNullOrEmpty(id)) return [new RequestRejected(id ?? "", RejectionKind.Invalid, "request_id", "missing", "a request needs an id")];
        if (_byId.ContainsKey(id)) return [new RequestRejected(id, RejectionKind.Invalid, "request_id", "duplicate", $"request id {id} is already in use")];
        int prompt = request.PromptTokens.Count;
        if (prompt == 0) return [new RequestRejected(id, RejectionKind.Invalid, "prompt", "empty", "the prompt has no tokens")];
        int ctx = _options.MaxContextTokens;
        if (prompt >= ctx)
            return [new RequestRejected(id, RejectionKind.Invalid, "prompt", "context_length_exceeded",
                $"the prompt has {prompt} tokens; the model's context holds {ctx}, and at least one must be left to generate")];
        if (request.MaxTokens is < 1)
            return [new RequestRejected(id, RejectionKind.Invalid, "max_tokens", "out_of_range", $"max_tokens must be at least 1, got {request.MaxTokens}")];
        if (request.MaxTokens is { } mt && (long)prompt + mt > ctx)
            return [new RequestRejected(id, RejectionKind.Invalid, "max_tokens", "context_length_exceeded",
                $"prompt ({prompt} tokens) + max_tokens ({mt}) exceed the model's context of {ctx} tokens; lower max_tokens")];
        // The largest KV footprint this request may reach alone: positions prompt + generated - 1 (the last token's
        // keys are never needed). A request that needs more blocks than the whole pool could never finish.
        int poolTokens = _pool.TotalBlocks * _pool.BlockSize;
        int limit = Math.Min(request.MaxTokens ?? _options.DefaultMaxTokens, ctx - prompt);
        if (BlocksAlone(request.MaxTokens is null ? prompt : prompt + limit - 1) > _pool.TotalBlocks)
        {
            string field = request.MaxTokens is null ? "prompt" : "max_tokens";
            return [new RequestRejected(id, RejectionKind.Invalid, field, "kv_cache_exceeded",
                $"prompt ({prompt} tokens){(request.MaxTokens is null ? "" : $" + max_tokens ({limit})")} would need {BlocksAlone(request.MaxTokens is null ? prompt : prompt + limit - 1)} KV blocks " +
                $"of {_pool.BlockSize} tokens, more than the engine's whole pool ({_pool.TotalBlocks} blocks, {poolTokens} tokens)" +
                (request.MaxTokens is null ? "; shorten the prompt" : "; lower max_tokens"))];
        }
        if (request.MaxTokens is null && _options.SlidingWindow is null) limit = Math.Min(limit, poolTokens - prompt + 1);
        if (_waiting.Count >= _options.MaxQueuedRequests)
            return [new RequestRejected(id, RejectionKind.Overloaded, null, "overloaded",
                $"the engine is at capacity ({_running.Count} running, {_waiting.Count} waiting, queue limit {_options.MaxQueuedRequests}); retry later")];
        var s = new CoreSequence
        {
            Request = request,
            PromptLength = prompt,
            TokenLimit = limit,
            RoutingKey = BlockHash.RoutingKey(request.Routing),
            Arrival = ++_arrivals,
            QueuedAt = _clock.GetUtcNow(),
        };
        s.Tokens.AddRange(request.PromptTokens);
        _byId[id] = s;
        _waiting.AddLast(s);
        return [new RequestQueued(id, _waiting.Count)];
    }

    /// <summary>Blocks a sequence of <paramref name="positions"/> positions holds at most (a sliding window bounds it).</summary>
    private int BlocksAlone(int positions) => _options.SlidingWindow is { } w
        ? Math.Min(_pool.BlocksFor(positions), _pool.BlocksFor(w) + 1)
        : _pool.BlocksFor(positions);

    /// <summary>Ends a request: now, or (when it is in the step being computed) once that step's output arrives.</summary>
    public IReadOnlyList<SchedulerEvent> Cancel(string requestId, FinishReason reason = FinishReason.Cancelled, string? error = null)
    {
        if (!_byId.TryGetValue(requestId, out var s)) return [];
        var decision = new FinishDecision(reason, error);
        if (s.InStep)
        {
            s.PendingFinish ??= decision;
            return [];
        }
        var events = new List<SchedulerEvent>();
        Finish(s, decision, events);
        return events;
    }

    /// <summary>The request's reader stalled: it gets no decode rows (and is the first to give its blocks up) until resumed.</summary>
    public void Pause(string requestId)
    {
        if (_byId.TryGetValue(requestId, out var s)) s.Paused = true;
    }

    public void Resume(string requestId)
    {
        if (_byId.TryGetValue(requestId, out var s)) s.Paused = false;
    }

    /// <summary>No new requests from now on; <see cref="SchedulerDrained"/> comes once every request has ended.</summary>
    public IReadOnlyList<SchedulerEvent> Drain()
    {
        _draining = true;
        var events = new List<SchedulerEvent>();
        CheckDrained(events);
        return events;
    }

    /// <summary>Ends requests whose deadline passed (those in the running step when its output arrives).</summary>
    public IReadOnlyList<SchedulerEvent> ExpireDeadlines()
    {
        var events = new List<SchedulerEvent>();
        Expire(events);
        return events;
    }

    private void Expire(List<SchedulerEvent> events)
    {
        var now = _clock.GetUtcNow();
        foreach (var s in _byId.Values.Where(s => s.Request.Deadline is { } d && d <= now && s.PendingFinish is null).ToList())
        {
            var decision = new FinishDecision(FinishReason.Error,
                $"the request's deadline passed ({(s.Running ? "running" : "waiting")}, {s.Generated} tokens generated)");
            if (s.InStep) s.PendingFinish = decision;
            else Finish(s, decision, events);
        }
    }

    /// <summary>Forms the next step. Null step: nothing to run (idle, all paused, or out of blocks for anything).</summary>
    public ScheduleResult Schedule()
    {
        if (_inFlight is not null) throw new InvalidOperationException($"step {_inFlight.StepId} is still in flight; Update it first");
        var events = new List<SchedulerEvent>();
        Expire(events);
        long stepId = _stepId + 1;
        int budget = _options.MaxBatchTokens;
        var segments = new List<ScheduledSegment>();
        var planned = new HashSet<CoreSequence>();
        int preempted = 0;

        // 1. Decode rows: the policy picks among the ready ones; blocks are handed out oldest admission first, so when
        //    the pool runs dry it is the newest that give theirs up.
        var ready = _running.Where(s => !s.IsPrefilling && !s.Paused && s.PendingFinish is null).ToList();
        int capacity = Math.Min(budget, _options.DecodeCapacity);
        bool byExperts = _options.Batching == BatchingPolicy.ExpertAware && ready.Count > capacity;
        var picked = DecodeBatching.Select(ready.Select(s => new DecodeCandidate(s.LastScheduledStep, byExperts ? s.NextExperts : null)).ToList(),
            capacity, stepId, _options.Batching, _options.MaxWaitSteps);
        foreach (var s in picked.Select(i => ready[i]).OrderBy(s => s.AdmitOrder))
        {
            if (!s.Running) continue; // preempted for an older sequence's block
            if (!EnsureBlocks(s, s.Computed + 1, planned, events, ref preempted)) continue;
            segments.Add(Segment(s, s.Computed, 1, needsLogits: true, isPrefill: false));
            planned.Add(s);
            s.LastScheduledStep = stepId;
            budget--;
        }

        // 2. Prefill chunks of running sequences, in admission order.
        foreach (var s in _running.OrderBy(s => s.AdmitOrder).ToList())
        {
            if (budget == 0) break;
            if (!s.Running || !s.IsPrefilling || s.PendingFinish is not null || planned.Contains(s)) continue;
            int chunk = Math.Min(Math.Min(s.PrefillEnd - s.Computed, _options.PrefillChunk), budget);
            if (!EnsureBlocks(s, s.Computed + chunk, planned, events, ref preempted)) continue;
            segments.Add(Segment(s, s.Computed, chunk, needsLogits: s.Computed + chunk == s.PrefillEnd, isPrefill: true));
            planned.Add(s);
            budget -= chunk;
        }

        // 3. Admissions (preempted sequences first, they wait at the head), only from blocks free now: a waiting
        //    request never preempts a running one, and none is admitted in a step that had to preempt.
        if (preempted == 0) Admit(stepId, ref budget, segments, planned, events);

        if (segments.Count == 0)
        {
            CheckDrained(events);
            return new ScheduleResult(null, events);
        }
        _stepId = stepId;
        foreach (var s in planned) s.InStep = true;
        _inFlight = new ScheduledStep(stepId, segments.ToImmutableArray(), _pool.BlockSize);
        return new ScheduleResult(_inFlight, events);
    }

    private void Admit(long stepId, ref int budget, List<ScheduledSegment> segments, HashSet<CoreSequence> planned, List<SchedulerEvent> events)
    {
        int outstanding = _running.Where(s => s.IsPrefilling).Sum(s => Math.Max(0, _pool.BlocksFor(s.PrefillEnd) - s.Blocks.Count));
        var node = _waiting.First;
        while (node is not null && budget > 0 && _running.Count < _options.MaxRunningSequences)
        {
            var s = node.Value;
            var next = node.Next;
            if (s.Paused || s.PendingFinish is not null)
            {
                node = next;
                continue;
            }
            // Prefix blocks already cached (shared by reference), leaving at least the last token to compute.
            var hits = new List<int>();
            var last = BlockHash.Root(s.RoutingKey);
            int hitBlocks = 0;
            if (_options.PrefixCaching)
            {
                hitBlocks = _pool.MatchPrefix(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(s.Tokens), s.RoutingKey,
                    (s.Tokens.Count - 1) / _pool.BlockSize, hits, out last);
            }
            if (WaitsForSharedPrefix(s, hitBlocks))
            {
                foreach (int b in hits) _pool.Release(b);
                node = next;
                continue;
            }
            int need = _pool.BlocksFor(s.Tokens.Count) - hitBlocks;
            if (_pool.AvailableBlocks - outstanding < need)
            {
                foreach (int b in hits) _pool.Release(b);
                break; // first come, first served: nobody overtakes the head for lack of blocks
            }
            _waiting.Remove(node);
            bool again = s.EverAdmitted;
            s.Running = true;
            s.EverAdmitted = true;
            s.AdmitOrder = ++_admissions;
            s.Blocks.AddRange(hits);
            s.HashedBlocks = hitBlocks;
            s.LastHash = last;
            s.Computed = hitBlocks * _pool.BlockSize;
            s.PrefillEnd = s.Tokens.Count;
            s.LastScheduledStep = stepId;
            if (!again) s.CachedPromptTokens = s.Computed;
            if (_options.PrefixCaching) _prefixLookups++;
            _prefixHitTokens += s.Computed;
            _running.Add(s);
            events.Add(new RequestAdmitted(s.Id, s.Computed, _clock.GetUtcNow() - s.QueuedAt, again));

            int chunk = Math.Min(Math.Min(s.PrefillEnd - s.Computed, _options.PrefillChunk), budget);
            int before = _pool.AvailableBlocks;
            int dummy = 0;
            if (!EnsureBlocks(s, s.Computed + chunk, planned, events, ref dummy, mayPreempt: false))
                throw new InvalidOperationException("admission counted blocks that were not there");
            outstanding += need - (before - _pool.AvailableBlocks);
            segments.Add(Segment(s, s.Computed, chunk, needsLogits: s.Computed + chunk == s.PrefillEnd, isPrefill: true));
            planned.Add(s);
            budget -= chunk;
            node = next;
        }
    }

    /// <summary>
    /// Whether a running sequence is computing blocks this one would share: it waits for them to be registered rather
    /// than computing (and holding) its own copy. That is how 32 chats arriving together with one system prompt hold it
    /// once.
    /// </summary>
    private bool WaitsForSharedPrefix(CoreSequence s, int hitBlocks)
    {
        if (!_options.PrefixCaching) return false;
        int bs = _pool.BlockSize, maxBlocks = (s.Tokens.Count - 1) / bs;
        foreach (var r in _running)
        {
            if (r.RoutingKey != s.RoutingKey || r.HashedBlocks >= maxBlocks || r.PendingFinish is not null) continue;
            int limit = Math.Min(maxBlocks, r.PrefillEnd / bs) * bs, common = 0;
            while (common < limit && r.Tokens[common] == s.Tokens[common]) common++;
            int shared = common / bs;
            if (shared > hitBlocks && r.HashedBlocks < shared) return true;
        }
        return false;
    }

    /// <summary>Gives <paramref name="s"/> blocks for <paramref name="positions"/> positions, preempting others (paused
    /// ones first, then the newest) or itself when the pool is dry. False: <paramref name="s"/> was preempted or waits.</summary>
    private bool EnsureBlocks(CoreSequence s, int positions, HashSet<CoreSequence> planned, List<SchedulerEvent> events, ref int preempted, bool mayPreempt = true)
    {
        int need = _pool.BlocksFor(positions) - s.Blocks.Count;
        if (need <= 0) return true;
        while (_pool.AvailableBlocks < need)
        {
            if (!mayPreempt) return false;
            var victim = _running.Where(r => r == s || !planned.Contains(r))
                .OrderByDescending(r => r.Paused)
                .ThenByDescending(r => r.AdmitOrder)
                .First();
            Preempt(victim, events);
            preempted++;
            if (victim == s) return false;
        }
        if (!_pool.TryAllocate(need, s.Blocks)) throw new InvalidOperationException("the pool refused blocks it reported available");
        return true;
    }

    private void Preempt(CoreSequence s, List<SchedulerEvent> events)
    {
        int freed = ReleaseBlocks(s);
        _running.Remove(s);
        s.Running = false;
        s.Computed = 0;
        s.HashedBlocks = 0;
        s.NextExperts = null;
        s.Preemptions++;
        _preemptions++;
        _waiting.AddFirst(s);
        events.Add(new RequestPreempted(s.Id, s.Tokens.Count, freed));
    }

    /// <summary>Releases a sequence's blocks, last first: the tail of a cached chain is evicted before its head.</summary>
    private int ReleaseBlocks(CoreSequence s)
    {
        int n = 0;
        for (int i = s.Blocks.Count - 1; i >= 0; i--)
        {
            if (s.Blocks[i] == ScheduledSegment.NoBlock) continue;
            _pool.Release(s.Blocks[i]);
            n++;
        }
        s.Blocks.Clear();
        return n;
    }

    private static ScheduledSegment Segment(CoreSequence s, int start, int count, bool needsLogits, bool isPrefill) =>
        new(s.Id, s.Tokens.GetRange(start, count).ToImmutableArray(), start, needsLogits, isPrefill, s.Blocks.ToImmutableArray(), s.Request.Routing)
        {
            NextExperts = isPrefill ? null : s.NextExperts,
            NextExpertsExact = !isPrefill && s.NextExpertsExact,
        };

    /// <summary>Takes the in-flight step's output: advances each sequence, registers its newly full blocks for sharing,
    /// appends sampled tokens, ends requests the output stage (or a limit, a cancel, a deadline) ended.</summary>
    public IReadOnlyList<SchedulerEvent> Update(StepOutput output)
    {
        ArgumentNullException.ThrowIfNull(output);
        var step = _inFlight ?? throw new InvalidOperationException("no step is in flight");
        if (output.StepId != step.StepId) throw new ArgumentException($"output of step {output.StepId}, but step {step.StepId} is in flight", nameof(output));
        if (output.Error is null)
        {
            if (output.Segments.Count != step.Segments.Length)
                throw new ArgumentException($"step {step.StepId} planned {step.Segments.Length} segments, the output has {output.Segments.Count}", nameof(output));
            for (int i = 0; i < step.Segments.Length; i++)
            {
                var (seg, o) = (step.Segments[i], output.Segments[i]);
                if (o.RequestId != seg.RequestId) throw new ArgumentException($"output segment {i} is {o.RequestId}, the plan's is {seg.RequestId}", nameof(output));
                if (seg.NeedsLogits && o.SampledToken is null && _byId.GetValueOrDefault(seg.RequestId)?.PendingFinish is null)
                    throw new ArgumentException($"segment {i} ({seg.RequestId}) asked for logits but the output has no token", nameof(output));
            }
        }
        _inFlight = null;
        var events = new List<SchedulerEvent>();
        for (int i = 0; i < step.Segments.Length; i++)
        {
            var seg = step.Segments[i];
            var s = _byId[seg.RequestId];
            s.InStep = false;
            if (output.Error is not null)
            {
                Finish(s, new FinishDecision(FinishReason.Error, output.Error), events);
                continue;
            }
            s.Computed = seg.ContextLength;
            if (seg.IsPrefill) _promptComputed += seg.Tokens.Length;
            RegisterFullBlocks(s);
            FreeOutsideWindow(s);
            if (s.PendingFinish is { } pending)
            {
                Finish(s, pending, events);
                continue;
            }
            if (!seg.NeedsLogits) continue;
            var o = output.Segments[i];
            int token = o.SampledToken!.Value;
            s.Tokens.Add(token);
            _generated++;
            events.Add(new TokenProduced(s.Id, token, s.Generated - 1));
            if (o.Finish is { } f) Finish(s, f, events);
            else if (s.Generated >= s.TokenLimit) Finish(s, new FinishDecision(FinishReason.Length), events);
            else (s.NextExperts, s.NextExpertsExact) = (o.NextExperts, o.NextExpertsExact);
        }
        Expire(events);
        CheckDrained(events);
        return events;
    }

    private void RegisterFullBlocks(CoreSequence s)
    {
        int full = s.Computed / _pool.BlockSize;
        var tokens = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(s.Tokens);
        for (int b = s.HashedBlocks; b < full; b++)
        {
            var span = tokens.Slice(b * _pool.BlockSize, _pool.BlockSize);
            s.LastHash = _options.PrefixCaching && s.Blocks[b] != ScheduledSegment.NoBlock
                ? _pool.Register(s.Blocks[b], s.LastHash, span, s.RoutingKey)
                : BlockHash.Chain(s.LastHash, span, s.RoutingKey);
        }
        s.HashedBlocks = Math.Max(s.HashedBlocks, full);
    }

    /// <summary>Sliding window: the next token to run (a decode token, or the first of the next prefill chunk) sits at
    /// position Computed and attends to Computed-window+1..Computed; blocks wholly before that are given back.</summary>
    private void FreeOutsideWindow(CoreSequence s)
    {
        if (_options.SlidingWindow is not { } w) return;
        int firstNeeded = s.Computed - w + 1;
        for (int b = 0; b < s.Blocks.Count && (b + 1) * _pool.BlockSize <= firstNeeded; b++)
        {
            if (s.Blocks[b] == ScheduledSegment.NoBlock) continue;
            _pool.Release(s.Blocks[b]);
            s.Blocks[b] = ScheduledSegment.NoBlock;
        }
    }

    private void Finish(CoreSequence s, FinishDecision decision, List<SchedulerEvent> events)
    {
        if (s.InStep) throw new InvalidOperationException($"{s.Id} is in the running step; its blocks are still being written");
        _byId.Remove(s.Id);
        if (s.Running) _running.Remove(s);
        else _waiting.Remove(s);
        ReleaseBlocks(s);
        s.Running = false;
        _completed++;
        events.Add(new RequestFinished(s.Id, decision.Reason, decision.Error, s.PromptLength, s.Generated, s.CachedPromptTokens));
        CheckDrained(events);
    }

    private void CheckDrained(List<SchedulerEvent> events)
    {
        if (!_draining || _drainedSent || _byId.Count > 0) return;
        _drainedSent = true;
        events.Add(new SchedulerDrained());
    }
}
