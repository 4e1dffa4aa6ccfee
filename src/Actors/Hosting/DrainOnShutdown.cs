using Akka.Actor;
using Akka.Event;
using Microsoft.Extensions.Hosting;

namespace MoeServer.Actors.Hosting;

/// <summary>
/// On SIGTERM (host stopping) a gateway stops admitting requests and finishes the ones it has before the
/// ActorSystem leaves the cluster; an expert node's shards are handed off by cluster sharding as it leaves.
/// </summary>
internal sealed class DrainOnShutdown(MoeNodeRuntime runtime, ActorSystem system) : IHostedService
{
    public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        runtime.Status.Set(NodePhase.Leaving, "shutting down");
        if (runtime.Engine is not { } engine) return;
        var log = Logging.GetLogger(system, "drain");
        if (system.WhenTerminated.IsCompleted) return; // nothing left to drain through
        try
        {
            var drain = engine.DrainAsync(TimeSpan.FromSeconds(90));
            if (await Task.WhenAny(drain, system.WhenTerminated).WaitAsync(cancellationToken).ConfigureAwait(false) != drain)
            {
                log.Warning("the actor system terminated before the drain finished");
                return;
            }
            await drain.ConfigureAwait(false);
            log.Info("drained: every request finished");
        }
        catch (Exception ex) when (ex is TimeoutException or OperationCanceledException or AskTimeoutException)
        {
            log.Warning("drain did not finish in time: {0}", ex.Message);
        }
    }
}
