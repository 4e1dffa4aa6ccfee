using System.Runtime.CompilerServices;
using System.Threading.Channels;

namespace MoeServer.Actors.Generation;

/// <summary>
/// A request's output as an async stream of token chunks with backpressure: the channel is bounded, and a reader
/// that falls behind pauses its sequence in the scheduler until it catches up. Disposing (or the submit token
/// being cancelled) cancels the generation and frees its KV cache and batch slot within one step.
/// </summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Naming", "CA1711", Justification = "A stream of tokens is what it is.")]
public sealed class GenerationStream : IAsyncEnumerable<TokenChunk>, IAsyncDisposable
{
    private readonly ChannelReader<TokenChunk> _reader;
    private readonly Action _cancel;

    internal GenerationStream(string requestId, ChannelReader<TokenChunk> reader, Action cancel)
    {
        RequestId = requestId;
        _reader = reader;
        _cancel = cancel;
    }

    public string RequestId { get; }

    /// <summary>The request's generation actor (tests watch it end).</summary>
    internal Akka.Actor.IActorRef? Actor { get; init; }

    public async IAsyncEnumerator<TokenChunk> GetAsyncEnumerator(CancellationToken cancellationToken = default)
    {
        using var reg = cancellationToken.Register(_cancel);
        while (await _reader.WaitToReadAsync(cancellationToken).ConfigureAwait(false))
        {
            while (_reader.TryRead(out var chunk))
            {
                yield return chunk;
                if (chunk.IsFinal) yield break;
            }
        }
    }

    /// <summary>Reads the whole stream: the concatenated text and the final chunk.</summary>
    public async Task<(string Text, TokenChunk Final, IReadOnlyList<int> TokenIds)> CollectAsync(CancellationToken cancellationToken = default)
    {
        var text = new System.Text.StringBuilder();
        var ids = new List<int>();
        TokenChunk? last = null;
        await foreach (var c in this.WithCancellation(cancellationToken).ConfigureAwait(false))
        {
            text.Append(c.Text);
            if (c.TokenId >= 0) ids.Add(c.TokenId);
            last = c;
        }
        return (text.ToString(), last ?? throw new InvalidOperationException($"stream of {RequestId} ended without a final chunk"), ids);
    }

    /// <summary>Cancels the generation (client gone).</summary>
    public void Cancel() => _cancel();

    public ValueTask DisposeAsync()
    {
        _cancel();
        return ValueTask.CompletedTask;
    }
}
