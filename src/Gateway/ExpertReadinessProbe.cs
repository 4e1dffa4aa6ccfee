using MoeServer.Actors.Experts;
using MoeServer.Actors.Hosting;
using MoeServer.Gateway.Options;

namespace MoeServer.Gateway;

/// <summary>
/// /ready on a gateway: every expert entity must answer a ping within <c>ready-ping-timeout</c>, wherever its shard
/// lives now. Answers are reused for <c>ready-cache-for</c>, and concurrent checks share one round of pings.
/// </summary>
public sealed class ExpertReadinessProbe(MoeNodeRuntime runtime, GatewayOptions options)
{
    private readonly object _gate = new();
    private Task<(bool Ready, string Reason)>? _inFlight;
    private (bool Ready, string Reason) _last;
    private DateTime _lastAt = DateTime.MinValue;

    public Task<(bool Ready, string Reason)> CheckAsync()
    {
        lock (_gate)
        {
            if (DateTime.UtcNow - _lastAt < options.ReadyCacheFor) return Task.FromResult(_last);
            return _inFlight ??= PingAsync();
        }
    }

    private async Task<(bool, string)> PingAsync()
    {
        (bool, string) result;
        try
        {
            var problems = await ExpertPinger.PingAllAsync(runtime.ExpertRegion!, runtime.Config, options.ReadyPingTimeout).ConfigureAwait(false);
            var silent = problems.Where(p => p.Problem.StartsWith("no answer", StringComparison.Ordinal)).ToList();
            result = problems.Count == 0
                ? (true, "ready")
                : runtime.ExpertFailover is not null && silent.Count == problems.Count
                    // This gateway computes them itself while their shards move (moe.experts.failover): it serves.
                    ? (true, $"ready; {silent.Count} expert entities did not answer and are computed on this gateway (e.g. {silent[0].Expert.EntityId})")
                    : (false, $"{problems.Count} expert entities did not answer (e.g. {problems[0].Expert.EntityId}: {problems[0].Problem})");
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            result = (false, $"pinging the experts failed: {e.Message}");
        }
        lock (_gate)
        {
            _last = result;
            _lastAt = DateTime.UtcNow;
            _inFlight = null;
        }
        return result;
    }
}
