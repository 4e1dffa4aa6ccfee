using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using MoeServer.Actors.Generation;
using MoeServer.Gateway.Metrics;

namespace MoeServer.Gateway.Serving;

/// <summary>A token chunk of one choice of a job.</summary>
public readonly record struct ChoiceChunk(int Index, TokenChunk Chunk);

/// <summary>
/// Runs a <see cref="GenerationJob"/> on the engine: admits every choice (or none: if one is refused the others are
/// cancelled and the refusal is thrown), then yields the choices' chunks as they come, recording latency metrics.
/// </summary>
public sealed class GenerationRunner(MoeEngine engine, ServerMetrics metrics)
{
    public MoeEngine Engine => engine;

    /// <param name="arrivedAt">Stopwatch timestamp the request arrived at (default: now).</param>
    public async Task<RunningJob> StartAsync(GenerationJob job, CancellationToken clientGone, long? arrivedAt = null)
    {
        long arrival = arrivedAt ?? Stopwatch.GetTimestamp();
        using var activity = GatewayTracing.Source.StartActivity("moe.admit");
        var streams = new List<GenerationStream>(job.Choices.Count);
        try
        {
            foreach (var choice in job.Choices) streams.Add(await engine.SubmitAsync(choice, clientGone).ConfigureAwait(false));
        }
        catch
        {
            foreach (var s in streams) s.Cancel();
            throw;
        }
        return new RunningJob(job, streams, metrics, arrival);
    }
}

/// <summary>An admitted job: its chunks in arrival order across choices. Disposing cancels what still runs.</summary>
public sealed class RunningJob : IAsyncDisposable
{
    private readonly IReadOnlyList<GenerationStream> _streams;
    private readonly ServerMetrics _metrics;
    private readonly long _arrival;
    private int _disposed;

    internal RunningJob(GenerationJob job, IReadOnlyList<GenerationStream> streams, ServerMetrics metrics, long arrival)
    {
        Job = job;
        _streams = streams;
        _metrics = metrics;
        _arrival = arrival;
        metrics.ApiRequestOpened();
    }

    public GenerationJob Job { get; }

    public async IAsyncEnumerable<ChoiceChunk> ReadAllAsync([EnumeratorCancellation] CancellationToken ct = default)
    {
        if (_streams.Count == 1)
        {
            var timing = new ChoiceTiming(_metrics, _arrival);
            await foreach (var c in _streams[0].WithCancellation(ct).ConfigureAwait(false))
            {
                timing.Observe(c);
                yield return new ChoiceChunk(0, c);
            }
            yield break;
        }
        // Several choices: one pump per stream into a bounded channel (a slow reader still pauses the sequences).
        var merged = Channel.CreateBounded<ChoiceChunk>(new BoundedChannelOptions(64) { SingleReader = true });
        var pumps = _streams.Select((s, i) => PumpAsync(s, i, merged.Writer, ct)).ToArray();
        _ = Task.WhenAll(pumps).ContinueWith(t => merged.Writer.TryComplete(t.Exception?.GetBaseException()),
            CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        await foreach (var c in merged.Reader.ReadAllAsync(ct).ConfigureAwait(false)) yield return c;
    }

    private async Task PumpAsync(GenerationStream stream, int index, ChannelWriter<ChoiceChunk> writer, CancellationToken ct)
    {
        var timing = new ChoiceTiming(_metrics, _arrival);
        await foreach (var c in stream.WithCancellation(ct).ConfigureAwait(false))
        {
            timing.Observe(c);
            await writer.WriteAsync(new ChoiceChunk(index, c), ct).ConfigureAwait(false);
        }
    }

    public ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return ValueTask.CompletedTask;
        _metrics.ApiRequestClosed();
        foreach (var s in _streams) s.Cancel(); // no-op for finished streams
        return ValueTask.CompletedTask;
    }

    /// <summary>TTFT, inter-token gaps, queue time and end-to-end time of one choice.</summary>
    private sealed class ChoiceTiming(ServerMetrics metrics, long arrival)
    {
        private long _lastToken;

        public void Observe(TokenChunk c)
        {
            long now = Stopwatch.GetTimestamp();
            if (c.QueueTime is { } q) metrics.Queued(q);
            if (c.TokenId >= 0)
            {
                if (_lastToken == 0) metrics.FirstToken(Stopwatch.GetElapsedTime(arrival, now));
                else metrics.InterToken(Stopwatch.GetElapsedTime(_lastToken, now));
                _lastToken = now;
            }
            if (c.IsFinal) metrics.Finished(c, Stopwatch.GetElapsedTime(arrival, now));
        }
    }
}
