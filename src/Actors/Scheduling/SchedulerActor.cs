using System.Diagnostics;
using Akka.Actor;
using Akka.Event;
using MoeServer.Actors.Compute;
using MoeServer.Actors.Generation;
using MoeServer.Kernels.Generation;
using MoeServer.Kernels.Model;
using MoeServer.Kernels.Sampling;
using MoeServer.Kernels.Tokenization;
using static MoeServer.Actors.Scheduling.SchedulerProtocol;

namespace MoeServer.Actors.Scheduling;

/// <summary>
/// The router: continuous batching over every admitted request. Each step takes one decode token from every
/// running sequence and fills the rest of the token budget with prefill chunks, runs the model on the node's compute thread
/// (experts through the shard region), samples, and streams the tokens to each request's generation actor.
/// Requests join and leave between steps; admission is bounded by running sequences and KV-cache memory, and a
/// bounded wait queue refuses requests beyond it at once.
/// </summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Design", "CA1001", Justification = "Disposed in PostStop, the actor's end of life.")]
public sealed class SchedulerActor : ReceiveActor
{
    private readonly MoeModel _model;
    private readonly ITokenizer _tokenizer;
    private readonly SchedulerOptions _options;
    private readonly StepRunner _runner;
    private readonly ComputeThread _compute = ComputeThreads.Get(Context.System).Thread;
    private readonly ILoggingAdapter _log = Context.GetLogger();
    private readonly LinkedList<SequenceState> _waiting = new();
    private readonly List<SequenceState> _running = new();
    private readonly Dictionary<string, SequenceState> _byId = new();
    private readonly HashSet<int> _eos;
    private readonly long _kvBytesPerToken;
    private readonly StepTimings _totals = new();
    private long _kvReserved;
    private IReadOnlySet<(int Layer, int Expert)> _disabled = new HashSet<(int, int)>();
    private long _stepId;
    private bool _stepInFlight;
    private bool _draining;
    private readonly List<IActorRef> _drainWaiters = new();
    private long _completed, _promptTokens, _generatedTokens;

    private readonly EngineGauges _gauges;
    private readonly PrefixCache? _prefixCache;

    public SchedulerActor(MoeModel model, ITokenizer tokenizer, ExpertDispatcherFactory dispatcher, SchedulerOptions options, EngineGauges gauges)
    {
        _model = model;
        _tokenizer = tokenizer;
        _options = options;
        _gauges = gauges;
        _runner = new StepRunner(model, dispatcher(Context.GetLogger()), gauges, options);
        if (options.PrefixCacheBytes > 0) _prefixCache = new PrefixCache(options.PrefixCacheBytes, options.PrefixCacheMinTokens);
        var cfg = model.Config;
        _eos = new HashSet<int>(cfg.EosTokenIds);
        if (tokenizer.EosId is { } te) _eos.Add(te);
        _kvBytesPerToken = 2L * cfg.NumLayers * cfg.NumKvHeads * cfg.HeadDim * sizeof(float)
            + (cfg.Router is { } rc ? 2L * rc.NumLayers * rc.NumKvHeads * rc.HeadDim * sizeof(float) : 0); // the router's own cache

        Receive<Submit>(OnSubmit);
        Receive<Cancel>(OnCancel);
        Receive<Pause>(m =>
        {
            if (_byId.TryGetValue(m.RequestId, out var s)) s.Paused = true;
        });
        Receive<Resume>(m =>
        {
            if (!_byId.TryGetValue(m.RequestId, out var s)) return;
            s.Paused = false;
            MaybeStep();
        });
        Receive<StepResult>(OnStepDone);
        Receive<GetStats>(_ => Sender.Tell(Stats()));
        Receive<SetDisabledExperts>(m =>
        {
            _disabled = m.Disabled;
            Sender.Tell(new DisabledExpertsSet());
        });
        Receive<ListRequests>(_ => Sender.Tell(new RequestList(_running.Concat(_waiting).Select(Info).ToList())));
        Receive<StartRoutingTrace>(_ =>
        {
            _runner.Trace = new Kernels.Residency.RoutingTrace(Kernels.Config.ModelArchitectureNames.ToModelType(_model.Config.Architecture), _model.Config.NumLayers, _model.Config.NumExperts);
            Sender.Tell(new RoutingTraceStarted());
        });
        Receive<StopRoutingTrace>(_ =>
        {
            var trace = _runner.Trace;
            _runner.Trace = null;
            Sender.Tell(trace is null
                ? new Status.Failure(new InvalidOperationException("no routing trace is being recorded (start one first)"))
                : new RoutingTraceRecorded(trace));
        });
        Receive<Drain>(_ =>
        {
            if (!_draining) _log.Info("draining: no new requests; {0} running, {1} waiting", _running.Count, _waiting.Count);
            _draining = true;
            _drainWaiters.Add(Sender);
            CheckDrained();
        });
    }

    public delegate Experts.ExpertDispatcher ExpertDispatcherFactory(ILoggingAdapter log);

    public static Props PropsFor(MoeModel model, ITokenizer tokenizer, ExpertDispatcherFactory dispatcher, SchedulerOptions options, EngineGauges gauges) =>
        Props.Create(() => new SchedulerActor(model, tokenizer, dispatcher, options, gauges)).WithDispatcher(DispatcherId);

    /// <summary>The scheduler runs on the node's compute thread between steps (hocon/base.hocon).</summary>
    public const string DispatcherId = "moe-scheduler-dispatcher";

    private void OnSubmit(Submit m)
    {
        var req = m.Request;
        if (_draining)
        {
            m.Generation.Tell(new Rejected(req.RequestId, RejectionKind.Draining, "the server is shutting down and takes no new requests"));
            return;
        }
        if (_byId.ContainsKey(req.RequestId))
        {
            m.Generation.Tell(new Rejected(req.RequestId, RejectionKind.Invalid, $"request id {req.RequestId} is already in use"));
            return;
        }
        if (_disabled.Count > 0)
        {
            // Operators' disabled experts join the request's own (MoTE); running requests keep their routing.
            var merged = new Kernels.Model.RoutingOverride(req.Routing?.TopKExperts,
                (req.Routing?.DisabledExperts ?? new HashSet<(int, int)>()).Union(_disabled).ToHashSet());
            if (merged.GetValidationErrors(_model.Config) is { Count: > 0 } errors)
            {
                m.Generation.Tell(new Rejected(req.RequestId, RejectionKind.Invalid,
                    string.Join("; ", errors) + " (with the experts an operator disabled: " + string.Join(", ", _disabled.Select(d => $"{d.Layer}.{d.Expert}")) + ")"));
                return;
            }
            req = req with { Routing = merged };
        }
        int ctx = _model.Config.MaxPositionEmbeddings;
        int prompt = req.PromptTokens.Count;
        int maxTokens = Math.Min(req.Sampling.MaxTokens ?? _options.DefaultMaxTokens, ctx - prompt);
        long need = (prompt + maxTokens) * _kvBytesPerToken;
        if (need > _options.KvCacheBudgetBytes)
        {
            m.Generation.Tell(new Rejected(req.RequestId, RejectionKind.Invalid,
                $"prompt ({prompt} tokens) + max_tokens ({maxTokens}) need {FormatBytes(need)} of KV cache, over the engine's budget of {FormatBytes(_options.KvCacheBudgetBytes)}; lower max_tokens"));
            return;
        }
        bool runsNow = _waiting.Count == 0 && _running.Count < _options.MaxRunningSequences && _kvReserved + need <= _options.KvCacheBudgetBytes;
        if (!runsNow && _waiting.Count >= _options.MaxQueuedRequests)
        {
            _log.Warning("[{0}] refused: queue full ({1} running, {2} waiting)", req.RequestId, _running.Count, _waiting.Count);
            m.Generation.Tell(new Rejected(req.RequestId, RejectionKind.Overloaded,
                $"the engine is at capacity ({_running.Count} running, {_waiting.Count} waiting, queue limit {_options.MaxQueuedRequests}); retry later"));
            return;
        }
        var state = new SequenceState
        {
            Request = req,
            Generation = m.Generation,
            MaxTokens = maxTokens,
            ReservedKvBytes = need,
            Prompt = req.PromptTokens.ToArray(),
            Sampler = new TokenSampler(req.Sampling, req.PromptTokens.ToArray()),
            Detokenizer = new StreamingDetokenizer(_tokenizer, skipSpecialTokens: true),
            Stops = new StopStringMatcher(req.Sampling.StopStrings ?? []),
        };
        _byId[req.RequestId] = state;
        _waiting.AddLast(state);
        m.Generation.Tell(new Admitted(req.RequestId));
        _log.Debug("[{0}] queued: {1} prompt tokens, max_tokens {2}", req.RequestId, prompt, maxTokens);
        TryAdmit();
        MaybeStep();
        PublishGauges();
    }

    private void PublishGauges()
    {
        _gauges.SetQueue(_running.Count, _waiting.Count, _kvReserved, _running.Sum(s => s.Cache?.Bytes ?? 0));
        if (_prefixCache is { } p) _gauges.SetPrefixCache(p.Lookups, p.Hits, p.TokensReused, p.Bytes);
    }

    private static string FormatBytes(long bytes) => bytes switch
    {
        < 1L << 10 => $"{bytes} bytes",
        < 1L << 20 => $"{bytes / 1024.0:0.#} KiB",
        < 1L << 30 => $"{bytes / (1024.0 * 1024):0.#} MiB",
        _ => $"{bytes / (1024.0 * 1024 * 1024):0.##} GiB",
    };

    private void OnCancel(Cancel m)
    {
        if (!_byId.TryGetValue(m.RequestId, out var s)) return;
        _log.Info("[{0}] ending early: {1}{2}", m.RequestId, m.Reason, m.Error is null ? "" : " (" + m.Error + ")");
        if (s.InStep) s.PendingFinish = (m.Reason, m.Error);
        else Finish(s, m.Reason, "", -1, null, m.Error);
        TryAdmit();
        MaybeStep();
        PublishGauges();
    }

    private void TryAdmit()
    {
        while (_waiting.First is { } node)
        {
            var s = node.Value;
            if (_running.Count >= _options.MaxRunningSequences) break;
            if (_kvReserved + s.ReservedKvBytes > _options.KvCacheBudgetBytes) break;
            _waiting.RemoveFirst();
            s.LastScheduledStep = _stepId;
            s.QueueTime = Stopwatch.GetElapsedTime(s.QueuedAt);
            s.Cache = _model.NewSequence(s.Prompt.Length + s.MaxTokens);
            if (_prefixCache is not null) s.Prefilled = s.CachedPromptTokens = _prefixCache.TryReuse(s.Prompt, s.Request.Routing, s.Cache);
            _kvReserved += s.ReservedKvBytes;
            _running.Add(s);
        }
    }

    private void MaybeStep()
    {
        if (_stepInFlight) return;
        var plan = FormPlan();
        if (plan is null) return;
        _stepInFlight = true;
        foreach (var seg in plan.Segments) seg.Sequence.InStep = true;
        var self = Self;
        _compute.Post(() => self.Tell(_runner.Run(plan))); // Run reports its own failures in the result
    }

    /// <summary>Decode tokens first (latency of running streams; when more are ready than a step takes, the batching
    /// policy picks), then prefill chunks in admission order.</summary>
    private StepPlan? FormPlan()
    {
        int budget = _options.MaxBatchTokens;
        var segments = new List<StepSegment>();
        long stepId = _stepId + 1;
        var ready = _running.Where(s => !s.IsPrefilling && !s.Paused && s.PendingFinish is null).ToList();
        bool byExperts = _options.Batching == BatchingPolicy.ExpertAware && ready.Count > Math.Min(budget, _options.DecodeCapacity);
        var picked = DecodeBatching.Select(ready.Select(s => new DecodeCandidate(s.LastScheduledStep, byExperts ? BatchingExperts(s) : null)).ToList(),
            Math.Min(budget, _options.DecodeCapacity), stepId, _options.Batching, _options.MaxWaitSteps);
        foreach (int i in picked)
        {
            var s = ready[i];
            segments.Add(new StepSegment(s, [s.LastToken], NeedsLogits: true, IsPrefill: false));
            s.LastScheduledStep = stepId;
            budget--;
        }
        foreach (var s in _running)
        {
            if (budget == 0) break;
            if (!s.IsPrefilling || s.PendingFinish is not null) continue;
            int chunk = Math.Min(Math.Min(s.Prompt.Length - s.Prefilled, _options.PrefillChunk), budget);
            segments.Add(new StepSegment(s, s.Prompt.AsSpan(s.Prefilled, chunk).ToArray(),
                NeedsLogits: s.Prefilled + chunk == s.Prompt.Length, IsPrefill: true));
            budget -= chunk;
        }
        if (segments.Count == 0) return null;
        _stepId = stepId;
        return new StepPlan(stepId, segments)
        {
            PreGate = PreGatePlan.For(stepId, _model.Config.NumLayers,
                segments.Where(g => !g.IsPrefill).Select(g => (g.Sequence.NextExperts, g.Sequence.NextExpertsExact)), _gauges.PredictionHitRate),
        };
    }

    /// <summary>What expert-aware batching goes by: exact pre-gated experts, or the layers where the keep-last prediction
    /// has been holding at least announce-confidence of the time (a guess below that would only cost fairness).</summary>
    private int[][]? BatchingExperts(SequenceState s)
    {
        if (s.NextExperts is not { } experts || s.NextExpertsExact) return s.NextExperts;
        var likely = experts.Select((e, l) => _gauges.PredictionHitRate(l) >= _options.AnnounceConfidence ? e : []).ToArray();
        return likely.Any(e => e.Length > 0) ? likely : null;
    }

    private void OnStepDone(StepResult r)
    {
        _stepInFlight = false;
        long t0 = Stopwatch.GetTimestamp();
        if (r.Error is not null)
        {
            var ids = string.Join(",", r.Plan.Segments.Select(s => s.Sequence.Id));
            _log.Error("[{0}] step {1} failed: {2}", ids, r.Plan.StepId, r.Error.Message);
        }
        for (int i = 0; i < r.Plan.Segments.Count; i++)
        {
            var seg = r.Plan.Segments[i];
            var s = seg.Sequence;
            s.InStep = false;
            if (!_byId.ContainsKey(s.Id)) continue;
            if (r.Error is not null)
            {
                Finish(s, FinishReason.Error, "", -1, null, ErrorText(r.Error));
                continue;
            }
            if (seg.IsPrefill)
            {
                s.Prefilled += seg.Tokens.Length;
                _promptTokens += seg.Tokens.Length;
            }
            if (s.PendingFinish is { } pf)
            {
                Finish(s, pf.Reason, "", -1, null, pf.Error);
                continue;
            }
            if (!seg.IsPrefill) ScorePrediction(s, r.ExpertsByLayer[i]);
            if (seg.NeedsLogits) OnToken(s, s.Sampler.Sample(r.Logits[i]), r.ExpertsByLayer[i]);
        }
        r.Timings.SamplingMs += Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
        if (r.Error is null) PreGateNextTokens(r.Plan, r.Timings);
        _totals.Add(r.Timings);
        TryAdmit();
        MaybeStep();
        PublishGauges();
    }

    /// <summary>How the experts expected for a decode row compare with where it was routed.</summary>
    private void ScorePrediction(SequenceState s, int[][]? actual)
    {
        if (s.NextExperts is not { } expected || actual is null) return;
        for (int l = 0; l < Math.Min(expected.Length, actual.Length); l++)
        {
            if (actual[l].Length == 0) continue;
            _gauges.AddPrediction(l, s.NextExpertsExact, expected[l].Order().SequenceEqual(actual[l].Order()));
        }
        s.NextExperts = null;
    }

    /// <summary>
    /// Every sequence that sampled a token and goes on decoding learns its next token's experts now: exactly, by
    /// running the decoupled router over the new tokens (it would run at the start of the next step anyway), or as
    /// a prediction (layer-wise: every gate on the new token's embedding, or its last token's experts).
    /// </summary>
    private void PreGateNextTokens(StepPlan plan, StepTimings timings)
    {
        var next = plan.Segments.Where(g => g.NeedsLogits && _byId.ContainsKey(g.Sequence.Id) && g.Sequence.PendingFinish is null
                                            && g.Sequence.Cache is not null && g.Sequence.LastToken >= 0)
            .Select(g => g.Sequence).ToList();
        if (next.Count == 0) return;
        bool exact = _options.ExactPreGate && _model.CanPreGate;
        if (!exact && (_model.CanPreGate || _options.LayerwisePrediction == LayerwisePrediction.KeepLast))
        {
            foreach (var s in next) (s.NextExperts, s.NextExpertsExact) = (s.LastExperts, false);
            return;
        }
        long t0 = Stopwatch.GetTimestamp();
        try
        {
            var batch = new BatchLayout(next.Select(s => new BatchSegment(s.Cache!, [s.LastToken], s.Request.Routing)).ToArray());
            if (exact)
            {
                var experts = _model.PreGate(batch);
                for (int i = 0; i < next.Count; i++) (next[i].NextExperts, next[i].NextExpertsExact) = (experts[i], true);
            }
            else
            {
                // Layer-wise: every layer's gate on the new token's embedding (the residual before any layer).
                var spec = _model.SpeculateFromEmbeddings(batch);
                for (int i = 0; i < next.Count; i++)
                {
                    var byLayer = new int[_model.Config.NumLayers][];
                    Array.Fill(byLayer, []);
                    foreach (var p in spec.Layers) byLayer[p.Layer] = p.ExpertsOfToken[i];
                    (next[i].NextExperts, next[i].NextExpertsExact) = (byLayer, false);
                }
            }
        }
        catch (Exception ex)
        {
            // The step that appends these tokens runs the router itself; nothing is lost but the early plan.
            _log.Warning("pre-gating {0} tokens failed: {1}", next.Count, ex.Message);
            foreach (var s in next) s.NextExperts = null;
        }
        timings.PreGateMs += Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
    }

    private static string ErrorText(Exception e) => e is Experts.ExpertUnavailableException or Serialization.MessageTooLargeException
        ? e.Message
        : $"the model step failed: {e.Message}";

    private void OnToken(SequenceState s, SampledToken tok, int[][]? experts)
    {
        s.LastExperts = experts;
        s.Generated++;
        _generatedTokens++;
        s.LastToken = tok.TokenId;
        var stopIds = s.Request.Sampling.StopTokenIds;
        if (_eos.Contains(tok.TokenId) || (stopIds is not null && stopIds.Contains(tok.TokenId)))
        {
            Finish(s, FinishReason.Stop, FlushText(s), tok.TokenId, tok, null);
            return;
        }
        var step = s.Stops.Append(s.Detokenizer.Push(tok.TokenId));
        if (step.Stopped)
        {
            Finish(s, FinishReason.Stop, step.Text, tok.TokenId, tok, null);
            return;
        }
        if (s.Generated >= s.MaxTokens)
        {
            Finish(s, FinishReason.Length, step.Text + FlushText(s), tok.TokenId, tok, null);
            return;
        }
        s.Generation.Tell(new Emit(new TokenChunk(s.Id, step.Text, tok.TokenId, tok)
        {
            ExpertsByLayer = experts,
            QueueTime = TakeQueueTime(s),
        }));
    }

    /// <summary>The queue time goes out once, on the first chunk of the stream.</summary>
    private static TimeSpan? TakeQueueTime(SequenceState s)
    {
        if (s.QueueTimeSent) return null;
        s.QueueTimeSent = true;
        return s.QueueTime ?? Stopwatch.GetElapsedTime(s.QueuedAt); // never admitted: it waited until now
    }

    private static string FlushText(SequenceState s) => s.Stops.IsStopped ? "" : s.Stops.Append(s.Detokenizer.Flush()).Text + s.Stops.Flush();

    /// <summary>Sends the final chunk and frees the sequence's KV cache, reservation and slot.</summary>
    private void Finish(SequenceState s, FinishReason reason, string text, int tokenId, SampledToken? tok, string? error)
    {
        _byId.Remove(s.Id);
        if (!_running.Remove(s)) _waiting.Remove(s);
        else _kvReserved -= s.ReservedKvBytes;
        if (s.Cache is not null)
        {
            // the prompt's keys/values are worth keeping for the next prompt that starts the same way
            if (_prefixCache is not null && error is null) _prefixCache.Offer(s.Prompt, s.Prefilled, s.Request.Routing, s.Cache);
            else s.Cache.Dispose();
            s.Cache = null;
        }
        _completed++;
        s.Generation.Tell(new Emit(new TokenChunk(s.Id, text, tokenId, tok)
        {
            FinishReason = reason,
            Usage = new GenerationUsage(s.Prompt.Length, s.Generated, s.CachedPromptTokens),
            Error = error,
            ExpertsByLayer = tok is null ? null : s.LastExperts,
            QueueTime = TakeQueueTime(s),
        }));
        _log.Debug("[{0}] finished: {1}, {2} prompt + {3} generated tokens", s.Id, reason, s.Prompt.Length, s.Generated);
        CheckDrained();
    }

    private void CheckDrained()
    {
        if (!_draining || _running.Count > 0 || _waiting.Count > 0) return;
        foreach (var w in _drainWaiters) w.Tell(new Drained());
        _drainWaiters.Clear();
    }

    private RequestInfo Info(SequenceState s) => new(s.Id,
        !_running.Contains(s) ? "waiting" : s.Paused ? "paused" : s.IsPrefilling ? "prefilling" : "decoding",
        s.Prompt.Length, s.Prefilled, s.Generated, s.MaxTokens, Stopwatch.GetElapsedTime(s.QueuedAt).TotalSeconds);

    private EngineStats Stats() => new(
        _running.Count,
        _waiting.Count,
        _running.Count(s => s.Paused),
        _kvReserved,
        _options.KvCacheBudgetBytes,
        _running.Sum(s => s.Cache?.Bytes ?? 0),
        _draining,
        _completed,
        _promptTokens,
        _generatedTokens,
        _totals.Clone());

    protected override void PostStop()
    {
        _prefixCache?.Dispose();
        foreach (var s in _byId.Values.ToArray())
        {
            if (s.InStep) continue; // the compute thread still uses its cache; it ends with the process
            s.Cache?.Dispose();
            s.Generation.Tell(new Emit(new TokenChunk(s.Id, "", -1, null)
            {
                FinishReason = FinishReason.Error,
                Usage = new GenerationUsage(s.Prompt.Length, s.Generated, s.CachedPromptTokens),
                Error = "the engine stopped",
            }));
        }
    }
}
