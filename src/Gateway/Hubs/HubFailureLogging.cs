using System.Runtime.CompilerServices;
using Microsoft.AspNetCore.SignalR;

namespace MoeServer.Gateway.Hubs;

/// <summary>
/// Logs what ends a hub call by the kind of ending. SignalR's dispatcher logs every exception out of a hub method,
/// including the <see cref="HubException"/>s the hub throws on purpose to refuse a request (an invalid field, an
/// overload), at Error level with a stack trace: each bad client request became an error entry. Its category
/// (<see cref="DispatcherCategory"/>) is therefore kept to Critical (its only Error entries are those two
/// hub-method failures; everything else it logs is Debug or Trace), and this filter logs them instead:
/// refusals at Information in one line, anything else (a bug) at Error with the exception, during the call and
/// while the stream is read.
/// </summary>
internal sealed partial class HubFailureLogging(ILogger<HubFailureLogging> log) : IHubFilter
{
    public const string DispatcherCategory = "Microsoft.AspNetCore.SignalR.Internal.DefaultHubDispatcher";

    public async ValueTask<object?> InvokeMethodAsync(HubInvocationContext invocation, Func<HubInvocationContext, ValueTask<object?>> next)
    {
        object? result;
        try
        {
            result = await next(invocation).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            Report(invocation.HubMethodName, e);
            throw;
        }
        return result is IAsyncEnumerable<HubTokenChunk> stream ? Watch(stream, invocation.HubMethodName) : result;
    }

    private async IAsyncEnumerable<HubTokenChunk> Watch(IAsyncEnumerable<HubTokenChunk> stream, string method,
        [EnumeratorCancellation] CancellationToken ct = default)
    {
        var e = stream.GetAsyncEnumerator(ct);
        await using (e.ConfigureAwait(false))
        {
            while (true)
            {
                try
                {
                    if (!await e.MoveNextAsync().ConfigureAwait(false)) yield break;
                }
                catch (Exception ex)
                {
                    Report(method, ex);
                    throw;
                }
                yield return e.Current;
            }
        }
    }

    private void Report(string method, Exception e)
    {
        switch (e)
        {
            case HubException refused:
                Refused(method, refused.Message);
                break;
            case OperationCanceledException:
                break; // the client disposed the stream or disconnected
            default:
                Failed(e, method);
                break;
        }
    }

    [LoggerMessage(1, LogLevel.Information, "hub {Method} refused: {Reason}")]
    private partial void Refused(string method, string reason);

    [LoggerMessage(2, LogLevel.Error, "hub {Method} failed")]
    private partial void Failed(Exception exception, string method);
}
