using System.Threading.Channels;
using Akka.Actor;
using Akka.Event;
using MoeServer.Kernels.Generation;
using static MoeServer.Actors.Scheduling.SchedulerProtocol;

namespace MoeServer.Actors.Generation;

/// <summary>
/// One request's actor: submits it to the scheduler, writes the chunks it gets into the request's bounded stream,
/// pauses the sequence while the reader is behind, and ends the request when the client goes away or its deadline
/// passes. Stops itself after the final chunk.
/// </summary>
internal sealed class GenerationActor : ReceiveActor, IWithTimers
{
    private sealed record ClientGone;
    private sealed record DeadlineExceeded;
    private sealed record Writable;

    private readonly GenerationRequest _request;
    private readonly IActorRef _scheduler;
    private readonly ChannelWriter<TokenChunk> _writer;
    private readonly TaskCompletionSource _admitted;
    private readonly CancellationToken _clientGone;
    private readonly ILoggingAdapter _log = Context.GetLogger();
    private readonly Queue<TokenChunk> _backlog = new();
    private CancellationTokenRegistration _registration;
    private bool _pausedSent, _waitingForSpace, _abandoned, _handedOff;
    private string? _deadlineError;

    public ITimerScheduler Timers { get; set; } = null!;

    public GenerationActor(GenerationRequest request, IActorRef scheduler, ChannelWriter<TokenChunk> writer,
        TaskCompletionSource admitted, CancellationToken clientGone)
    {
        _request = request;
        _scheduler = scheduler;
        _writer = writer;
        _admitted = admitted;
        _clientGone = clientGone;

        Receive<Admitted>(_ => _admitted.TrySetResult());
        Receive<Rejected>(r =>
        {
            _admitted.TrySetException(r.Kind switch
            {
                RejectionKind.Overloaded => new EngineOverloadedException(r.Reason),
                RejectionKind.Draining => new EngineUnavailableException(r.Reason),
                _ => new InvalidGenerationRequestException("max_tokens", r.Reason),
            });
            Context.Stop(Self);
        });
        Receive<Emit>(m => OnChunk(m.Chunk));
        Receive<Writable>(_ =>
        {
            _waitingForSpace = false;
            Flush();
        });
        Receive<ClientGone>(_ =>
        {
            _abandoned = true;
            _scheduler.Tell(new Cancel(_request.RequestId, FinishReason.Cancelled));
        });
        Receive<DeadlineExceeded>(_ =>
        {
            _deadlineError = $"the request exceeded its timeout of {_request.Timeout!.Value.TotalSeconds:0.###} s";
            _scheduler.Tell(new Cancel(_request.RequestId, FinishReason.Error, _deadlineError));
        });
    }

    public static Props PropsFor(GenerationRequest request, IActorRef scheduler, ChannelWriter<TokenChunk> writer,
        TaskCompletionSource admitted, CancellationToken clientGone) =>
        Props.Create(() => new GenerationActor(request, scheduler, writer, admitted, clientGone));

    protected override void PreStart()
    {
        var self = Self;
        _registration = _clientGone.Register(() => self.Tell(new ClientGone()));
        if (_request.Timeout is { } t) Timers.StartSingleTimer("deadline", new DeadlineExceeded(), t);
        _scheduler.Tell(new Submit(_request, Self));
    }

    private void OnChunk(TokenChunk chunk)
    {
        // The end the deadline caused is marked, so the API can answer with a timeout rather than a server error.
        if (chunk is { FinishReason: FinishReason.Error } && _deadlineError is not null && chunk.Error == _deadlineError)
            chunk = chunk with { DeadlineExceeded = true };
        _backlog.Enqueue(chunk);
        Flush();
    }

    private void Flush()
    {
        while (_backlog.TryPeek(out var c))
        {
            if (!_writer.TryWrite(c))
            {
                if (_abandoned && _backlog.Any(b => b.IsFinal))
                {
                    // The client is gone and its buffer is full: stop now rather than wait for a reader that may never
                    // come back. The rest of the stream (up to the final chunk) is written as space frees up, should
                    // anyone still read it; otherwise it is collected together with the stream.
                    HandOff();
                    return;
                }
                if (!_pausedSent)
                {
                    _pausedSent = true;
                    _scheduler.Tell(new Pause(_request.RequestId));
                }
                if (!_waitingForSpace)
                {
                    _waitingForSpace = true;
                    _writer.WaitToWriteAsync().AsTask().PipeTo(Self, success: _ => new Writable(), failure: _ => new Writable());
                }
                return;
            }
            _backlog.Dequeue();
            if (c.IsFinal)
            {
                Finish(c);
                return;
            }
        }
        if (_pausedSent)
        {
            _pausedSent = false;
            _scheduler.Tell(new Resume(_request.RequestId));
        }
    }

    private void HandOff()
    {
        var rest = _backlog.ToArray();
        _backlog.Clear();
        _handedOff = true;
        var final = rest.First(c => c.IsFinal);
        if (final.FinishReason == FinishReason.Error) _log.Warning("[{0}] ended with an error: {1}", _request.RequestId, final.Error);
        _ = WriteRestAsync(_writer, rest);
        Context.Stop(Self);
    }

    /// <summary>How long the rest of an abandoned stream waits for a reader before the stream is completed without it.</summary>
    internal static readonly TimeSpan AbandonedStreamGrace = TimeSpan.FromSeconds(30);

    private static async Task WriteRestAsync(ChannelWriter<TokenChunk> writer, TokenChunk[] rest)
    {
        // The client went away with its buffer full: a reader that still drains the stream gets the rest, but one that
        // never comes back must not keep the stream open for good (the leak bench found moe_request_streams_open stuck
        // at 1 after 10,000 requests: this write waited forever).
        using var grace = new CancellationTokenSource(AbandonedStreamGrace);
        try
        {
            foreach (var c in rest)
            {
                await writer.WriteAsync(c, grace.Token).ConfigureAwait(false);
                if (c.IsFinal) break;
            }
        }
        catch (ChannelClosedException)
        {
            // completed elsewhere
        }
        catch (OperationCanceledException) when (grace.IsCancellationRequested)
        {
            // nobody read it within the grace period: the stream ends here
        }
        finally
        {
            writer.TryComplete();
        }
    }

    private void Finish(TokenChunk final)
    {
        if (final.FinishReason == FinishReason.Error) _log.Warning("[{0}] ended with an error: {1}", _request.RequestId, final.Error);
        _writer.TryComplete();
        Context.Stop(Self);
    }

    protected override void PostStop()
    {
        _registration.Dispose();
        if (!_handedOff) _writer.TryComplete();
        _admitted.TrySetException(new EngineUnavailableException("the engine stopped before the request was admitted"));
    }
}
