using System.Threading.Channels;
using Akka.Actor;
using MoeServer.Actors.Scheduling;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Model;
using MoeServer.Kernels.Tokenization;

namespace MoeServer.Actors.Generation;

/// <summary>
/// The engine as the gateway sees it: submit a tokenized request, get its token stream. Validation errors name the
/// request field; a full queue is refused at once (<see cref="EngineOverloadedException"/>).
/// </summary>
public sealed class MoeEngine
{
    private readonly ActorSystem _system;
    private readonly IActorRef _scheduler;
    private readonly SchedulerOptions _options;

    public MoeEngine(ActorSystem system, IActorRef scheduler, ModelConfig config, ITokenizer tokenizer, SchedulerOptions options,
        EngineGauges gauges)
    {
        Gauges = gauges;
        _system = system;
        _scheduler = scheduler;
        Config = config;
        Tokenizer = tokenizer;
        _options = options;
    }

    public ModelConfig Config { get; }
    public ITokenizer Tokenizer { get; }
    public IActorRef Scheduler => _scheduler;
    /// <summary>Queue, KV-cache and per-expert counters, readable at any time without asking the scheduler.</summary>
    public EngineGauges Gauges { get; }

    /// <summary>Admits the request (or throws) and returns its output stream. Cancelling <paramref name="clientGone"/>
    /// later ends the generation with finish reason cancelled and frees its resources within one step.</summary>
    public async Task<GenerationStream> SubmitAsync(GenerationRequest request, CancellationToken clientGone = default)
    {
        Validate(request);
        if (request.TraceParent is null && EngineTracing.CurrentTraceParent() is { } trace) request = request with { TraceParent = trace };
        var channel = Channel.CreateBounded<TokenChunk>(new BoundedChannelOptions(_options.StreamBufferChunks)
        {
            SingleReader = true,
            SingleWriter = true,
            FullMode = BoundedChannelFullMode.Wait,
        });
        var admitted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var cancel = new CancellationTokenSource();
        var linked = CancellationTokenSource.CreateLinkedTokenSource(clientGone, cancel.Token);
        var writer = new CountedWriter(channel.Writer, Gauges);
        Gauges.GenerationActorStarted();
        var actor = _system.ActorOf(GenerationActor.PropsFor(request, _scheduler, writer, admitted, linked.Token),
            "gen-" + Uri.EscapeDataString(request.RequestId) + "-" + Guid.NewGuid().ToString("N")[..8]);
        // The token sources live as long as the request's actor (it listens to the linked token until it stops).
        _ = actor.WatchAsync(CancellationToken.None).ContinueWith(_ =>
        {
            Gauges.GenerationActorStopped();
            linked.Dispose();
            cancel.Dispose();
        }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        await admitted.Task.ConfigureAwait(false);
        return new GenerationStream(request.RequestId, channel.Reader, () =>
        {
            try
            {
                cancel.Cancel();
            }
            catch (ObjectDisposedException)
            {
                // already finished
            }
        })
        {
            Actor = actor,
        };
    }

    /// <summary>The scheduler's counters. It answers between steps, so the default timeout allows for long prefill steps.</summary>
    public Task<EngineStats> GetStatsAsync(TimeSpan? timeout = null) =>
        _scheduler.Ask<EngineStats>(new SchedulerProtocol.GetStats(), timeout ?? TimeSpan.FromSeconds(30));

    private readonly object _disabledGate = new();
    private readonly HashSet<ExpertId> _disabled = [];

    /// <summary>Experts an operator disabled for new requests on this gateway.</summary>
    public IReadOnlyList<ExpertId> DisabledExperts
    {
        get
        {
            lock (_disabledGate) return _disabled.OrderBy(e => e.Layer).ThenBy(e => e.Expert).ToList();
        }
    }

    /// <summary>Disables (or enables again) an expert for every new request (MoTE); refuses to leave a layer with fewer
    /// enabled experts than a token needs.</summary>
    public async Task SetExpertEnabledAsync(ExpertId expert, bool enabled, TimeSpan? timeout = null)
    {
        HashSet<(int, int)> next;
        lock (_disabledGate)
        {
            var candidate = new HashSet<ExpertId>(_disabled);
            if (enabled) candidate.Remove(expert);
            else candidate.Add(expert);
            var asOverride = new RoutingOverride(null, candidate.Select(e => (e.Layer, e.Expert)).ToHashSet());
            if (asOverride.GetValidationErrors(Config) is { Count: > 0 } errors) throw new ArgumentException(string.Join("; ", errors));
            int left = Config.NumExperts - candidate.Count(e => e.Layer == expert.Layer);
            if (left < Config.NumExpertsPerToken)
                throw new ArgumentException($"disabling {expert} would leave layer {expert.Layer} with {left} enabled experts, fewer than the {Config.NumExpertsPerToken} each token needs");
            _disabled.Clear();
            _disabled.UnionWith(candidate);
            next = _disabled.Select(e => (e.Layer, e.Expert)).ToHashSet();
        }
        await _scheduler.Ask<SchedulerProtocol.DisabledExpertsSet>(new SchedulerProtocol.SetDisabledExperts(next), timeout ?? TimeSpan.FromSeconds(30)).ConfigureAwait(false);
    }

    /// <summary>Every request the scheduler holds (running first, then waiting).</summary>
    public async Task<IReadOnlyList<RequestInfo>> ListRequestsAsync(TimeSpan? timeout = null) =>
        (await _scheduler.Ask<SchedulerProtocol.RequestList>(new SchedulerProtocol.ListRequests(), timeout ?? TimeSpan.FromSeconds(30))).Requests;

    /// <summary>Ends a request early as cancelled (an operator's action); false when no such request is held.</summary>
    public async Task<bool> CancelRequestAsync(string requestId, string reason, TimeSpan? timeout = null)
    {
        var held = await ListRequestsAsync(timeout);
        if (!held.Any(r => r.RequestId == requestId)) return false;
        _scheduler.Tell(new SchedulerProtocol.Cancel(requestId, Kernels.Generation.FinishReason.Cancelled, reason));
        return true;
    }

    /// <summary>Starts recording every step's routing (which sequences' rows went to which experts, per layer).</summary>
    public Task StartRoutingTraceAsync(TimeSpan? timeout = null) =>
        _scheduler.Ask<SchedulerProtocol.RoutingTraceStarted>(new SchedulerProtocol.StartRoutingTrace(), timeout ?? TimeSpan.FromSeconds(30));

    /// <summary>Stops recording and returns the trace (steps that were in flight are in it).</summary>
    public async Task<Kernels.Residency.RoutingTrace> StopRoutingTraceAsync(TimeSpan? timeout = null) =>
        (await _scheduler.Ask<SchedulerProtocol.RoutingTraceRecorded>(new SchedulerProtocol.StopRoutingTrace(), timeout ?? TimeSpan.FromSeconds(30))).Trace;

    /// <summary>Stops admitting requests and completes when every running and waiting request has finished.</summary>
    public Task DrainAsync(TimeSpan timeout) => _scheduler.Ask<SchedulerProtocol.Drained>(new SchedulerProtocol.Drain(), timeout);

    private void Validate(GenerationRequest r)
    {
        if (string.IsNullOrWhiteSpace(r.RequestId)) throw new InvalidGenerationRequestException("request_id", "the request id is empty");
        if (r.PromptTokens.Count == 0) throw new InvalidGenerationRequestException("prompt", "the prompt has no tokens");
        foreach (int id in r.PromptTokens)
            if ((uint)id >= (uint)Config.VocabSize)
                throw new InvalidGenerationRequestException("prompt", $"token id {id} is outside the vocabulary (0..{Config.VocabSize - 1})");
        if (r.PromptTokens.Count >= Config.MaxPositionEmbeddings)
            throw new InvalidGenerationRequestException("prompt",
                $"the prompt has {r.PromptTokens.Count} tokens; the model's context window is {Config.MaxPositionEmbeddings}");
        var errors = r.Sampling.GetValidationErrors(Config.VocabSize);
        if (errors.Count > 0) throw new InvalidGenerationRequestException(errors[0].Field, errors[0].Message);
        if (r.Routing is { } routing)
        {
            var re = routing.GetValidationErrors(Config);
            if (re.Count > 0)
                throw new InvalidGenerationRequestException(re[0].StartsWith("top_k_experts", StringComparison.Ordinal) ? "top_k_experts" : "disabled_experts", re[0]);
        }
        if (r.Timeout is { } t && (t <= TimeSpan.Zero || t > GenerationRequest.MaxTimeout))
            throw new InvalidGenerationRequestException("timeout", $"timeout must be positive and at most {GenerationRequest.MaxTimeout.TotalSeconds:0} s");
    }

    /// <summary>The request stream's writer, counted open in <see cref="EngineGauges.OpenStreams"/> until completed.</summary>
    private sealed class CountedWriter : ChannelWriter<TokenChunk>
    {
        private readonly ChannelWriter<TokenChunk> _inner;
        private readonly EngineGauges _gauges;
        private int _completed;

        public CountedWriter(ChannelWriter<TokenChunk> inner, EngineGauges gauges)
        {
            _inner = inner;
            _gauges = gauges;
            gauges.StreamOpened();
        }

        public override bool TryWrite(TokenChunk item) => _inner.TryWrite(item);

        public override ValueTask<bool> WaitToWriteAsync(CancellationToken cancellationToken = default) => _inner.WaitToWriteAsync(cancellationToken);

        public override ValueTask WriteAsync(TokenChunk item, CancellationToken cancellationToken = default) => _inner.WriteAsync(item, cancellationToken);

        public override bool TryComplete(Exception? error = null)
        {
            bool done = _inner.TryComplete(error);
            if (Interlocked.Exchange(ref _completed, 1) == 0) _gauges.StreamCompleted();
            return done;
        }
    }
}
