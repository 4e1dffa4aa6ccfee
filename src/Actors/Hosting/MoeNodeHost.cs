using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using MoeServer.Actors.Generation;

namespace MoeServer.Actors.Hosting;

/// <summary>
/// A node without HTTP (benchmarks, tests, embedding): a generic host with <see cref="MoeNodeHostingExtensions.AddMoeNode"/>.
/// The server executable builds the same node inside its web host.
/// </summary>
public sealed class MoeNodeHost : IAsyncDisposable
{
    private readonly IHost _host;

    private MoeNodeHost(IHost host)
    {
        _host = host;
        Runtime = host.Services.GetRequiredService<MoeNodeRuntime>();
    }

    public MoeNodeRuntime Runtime { get; }
    public IServiceProvider Services => _host.Services;
    public MoeEngine Engine => Runtime.Engine ?? throw new InvalidOperationException("not a gateway node");
    public string Address => Runtime.Status.Address;

    /// <summary>host:port of this node's cluster endpoint (what other nodes list as a seed node).</summary>
    public string SeedNode => new Uri(Address.Replace("akka.tcp://", "tcp://", StringComparison.Ordinal)).Authority;

    public static async Task<MoeNodeHost> StartAsync(MoeSettings settings, ILoggerProvider? logs = null, LogLevel minLevel = LogLevel.Information)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Logging.SetMinimumLevel(minLevel);
        if (logs is not null) builder.Logging.AddProvider(logs);
        builder.Services.AddMoeNode(settings);
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromMinutes(2));
        var host = builder.Build();
        await host.StartAsync().ConfigureAwait(false);
        return new MoeNodeHost(host);
    }

    /// <summary>Waits until the node is ready (member up; gateway: every expert entity answered).</summary>
    public async Task WaitReadyAsync(TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var (ready, reason) = Runtime.Status.Readiness();
            if (ready) return;
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"node {Address} not ready after {timeout.TotalSeconds:F0} s: {reason}");
            await Task.Delay(100).ConfigureAwait(false);
        }
    }

    /// <summary>Graceful stop: drain (gateway), leave the cluster, hand off shards.</summary>
    public async Task StopAsync(TimeSpan? timeout = null)
    {
        using var cts = new CancellationTokenSource(timeout ?? TimeSpan.FromMinutes(2));
        await _host.StopAsync(cts.Token).ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            await StopAsync().ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // stop timed out; dispose anyway
        }
        _host.Dispose();
        Runtime.Dispose();
    }
}
