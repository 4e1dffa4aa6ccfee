using System.Collections.Concurrent;
using System.Diagnostics;
using System.IO.Pipelines;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using MoeServer.Actors;
using MoeServer.Gateway.Serving;

namespace MoeServer.Bench.Gateway;

/// <summary>Server-side timestamps of one request (Stopwatch ticks; 0 = not seen). Client and server share this
/// process, so they are on the client's clock.</summary>
internal sealed class ProbeMarks
{
    /// <summary>ASP.NET Core hosting starts the request (Kestrel has read and parsed the request line and headers).</summary>
    public long HostingStart;
    /// <summary>The request reaches the end of the middleware pipeline (request ids, API keys, static files, routing).</summary>
    public long Endpoint;
    /// <summary>GenerationRunner.StartAsync begins (body read, JSON parsed, prompt tokenized, job planned).</summary>
    public long AdmitStart;
    /// <summary>GenerationRunner.StartAsync ends (MoeEngine.SubmitAsync returned: the scheduler admitted the request).</summary>
    public long AdmitStop;
    /// <summary>The engine step that prefilled the prompt (and so produced the first token): start and end of its forward pass.</summary>
    public long StepStart;
    public long StepStop;
    /// <summary>The response starts: status and headers written (the gateway sends them once the request is admitted).</summary>
    public long HeadersStart;
    /// <summary>Every flush of the response body (one per SSE event): when it began and completed.</summary>
    public List<(long Begin, long End)> Flushes { get; } = new(80);

    /// <summary>The flush that sent the event the client read at <paramref name="arrival"/>: the last one that began before it
    /// (for chat, the role chunk goes first and carries no text).</summary>
    public (long Begin, long End) FlushBefore(long arrival)
    {
        (long, long) found = default;
        lock (Flushes)
        {
            foreach (var f in Flushes)
                if (f.Begin <= arrival) found = f;
        }
        return found;
    }
}

/// <summary>
/// Timestamps inside the gateway without changing it, for the overhead breakdown: a DiagnosticListener subscription to
/// ASP.NET Core hosting (request start; it also wraps the response body to time its flushes), the gateway's and the
/// engine's ActivitySources (moe.admit, moe.step) and a middleware at the end of the pipeline. Only active between
/// <see cref="Start"/> and <see cref="Stop"/> (these hooks cost something themselves: activities per request and step),
/// and requests are matched by the x-request-id the client sends (the engine's request id).
/// </summary>
internal sealed class ServerProbe : IObserver<DiagnosticListener>, IObserver<KeyValuePair<string, object?>>, IDisposable
{
    private const string RequestIn = "Microsoft.AspNetCore.Hosting.HttpRequestIn";
    private readonly ConcurrentDictionary<string, ProbeMarks> _marks = new();
    private readonly List<IDisposable> _subscriptions = [];
    private ActivityListener? _activities;
    private volatile bool _on;

    public ProbeMarks Expect(string requestId) => _marks[requestId] = new ProbeMarks();

    public void Start()
    {
        _on = true;
        _subscriptions.Add(DiagnosticListener.AllListeners.Subscribe(this));
        _activities = new ActivityListener
        {
            ShouldListenTo = s => s.Name is GatewayTracing.SourceName or EngineTracing.SourceName,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStarted = a => a.SetCustomProperty("bench.ts", Stopwatch.GetTimestamp()),
            ActivityStopped = OnActivityStopped,
        };
        ActivitySource.AddActivityListener(_activities);
    }

    public void Stop()
    {
        _on = false;
        _activities?.Dispose();
        _activities = null;
        foreach (var s in _subscriptions) s.Dispose();
        _subscriptions.Clear();
        _marks.Clear();
    }

    public void Dispose() => Stop();

    /// <summary>Add to the app before it starts: runs after the gateway's own middleware, right before the endpoint.</summary>
    public Task Middleware(HttpContext ctx, Func<Task> next)
    {
        if (_on && Marks(ctx.Request.Headers["x-request-id"].ToString()) is { } m) m.Endpoint = Stopwatch.GetTimestamp();
        return next();
    }

    private ProbeMarks? Marks(string? id) => id is not null && _marks.TryGetValue(id, out var m) ? m : null;

    private void OnActivityStopped(Activity a)
    {
        long stop = Stopwatch.GetTimestamp();
        long start = a.GetCustomProperty("bench.ts") is long t ? t : stop;
        if (a.OperationName == "moe.admit")
        {
            // The HTTP request's activity (the parent) carries the request id (RequestIds middleware tags it).
            if (Marks(a.Parent?.GetTagItem("moe.request_id") as string) is { } m)
            {
                m.AdmitStart = start;
                m.AdmitStop = stop;
            }
        }
        else if (a.OperationName == "moe.step" && a.GetTagItem("moe.request_ids") is string ids)
        {
            foreach (var id in ids.Split(','))
            {
                if (Marks(id) is { StepStart: 0 } m)
                {
                    m.StepStart = start;
                    m.StepStop = stop;
                }
            }
        }
    }

    void IObserver<DiagnosticListener>.OnNext(DiagnosticListener listener)
    {
        if (listener.Name == "Microsoft.AspNetCore")
            lock (_subscriptions) _subscriptions.Add(listener.Subscribe(this, name => _on && name.StartsWith(RequestIn, StringComparison.Ordinal)));
    }

    void IObserver<KeyValuePair<string, object?>>.OnNext(KeyValuePair<string, object?> e)
    {
        if (e.Key != RequestIn + ".Start" || e.Value is not HttpContext ctx) return;
        long now = Stopwatch.GetTimestamp();
        if (Marks(ctx.Request.Headers["x-request-id"].ToString()) is not { } m) return;
        m.HostingStart = now;
        if (ctx.Features.Get<IHttpResponseBodyFeature>() is { } inner) ctx.Features.Set<IHttpResponseBodyFeature>(new TimedBody(inner, m));
    }

    void IObserver<DiagnosticListener>.OnCompleted() { }
    void IObserver<DiagnosticListener>.OnError(Exception error) { }
    void IObserver<KeyValuePair<string, object?>>.OnCompleted() { }
    void IObserver<KeyValuePair<string, object?>>.OnError(Exception error) { }

    /// <summary>The response body with its flushes timed.</summary>
    private sealed class TimedBody(IHttpResponseBodyFeature inner, ProbeMarks marks) : IHttpResponseBodyFeature
    {
        private PipeWriter? _writer;
        public Stream Stream => inner.Stream;
        public PipeWriter Writer => _writer ??= new TimedWriter(inner.Writer, marks);
        public void DisableBuffering() => inner.DisableBuffering();
        public Task StartAsync(CancellationToken cancellationToken = default)
        {
            if (marks.HeadersStart == 0) marks.HeadersStart = Stopwatch.GetTimestamp();
            return inner.StartAsync(cancellationToken);
        }
        public Task SendFileAsync(string path, long offset, long? count, CancellationToken cancellationToken = default) =>
            inner.SendFileAsync(path, offset, count, cancellationToken);
        public Task CompleteAsync() => inner.CompleteAsync();
    }

    private sealed class TimedWriter(PipeWriter inner, ProbeMarks marks) : PipeWriter
    {
        public override void Advance(int bytes) => inner.Advance(bytes);
        public override Memory<byte> GetMemory(int sizeHint = 0) => inner.GetMemory(sizeHint);
        public override Span<byte> GetSpan(int sizeHint = 0) => inner.GetSpan(sizeHint);
        public override void CancelPendingFlush() => inner.CancelPendingFlush();
        public override void Complete(Exception? exception = null) => inner.Complete(exception);
        public override ValueTask CompleteAsync(Exception? exception = null) => inner.CompleteAsync(exception);
        public override bool CanGetUnflushedBytes => inner.CanGetUnflushedBytes;
        public override long UnflushedBytes => inner.UnflushedBytes;

        public override async ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default)
        {
            long begin = Stopwatch.GetTimestamp();
            var r = await inner.FlushAsync(cancellationToken).ConfigureAwait(false);
            long end = Stopwatch.GetTimestamp();
            lock (marks.Flushes) marks.Flushes.Add((begin, end));
            return r;
        }
    }
}
