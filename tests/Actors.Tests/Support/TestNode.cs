using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using MoeServer.Actors.Generation;
using MoeServer.Actors.Hosting;

namespace MoeServer.Actors.Tests.Support;

/// <summary>
/// One engine node (its own ActorSystem on real TCP loopback, ephemeral port) inside the test process, built with
/// the same <see cref="MoeNodeHostingExtensions.AddMoeNode"/> as the server executable.
/// </summary>
public sealed class TestNode : IAsyncDisposable
{
    private readonly IHost _host;

    private TestNode(IHost host, MoeNodeRuntime runtime, LogCapture logs)
    {
        _host = host;
        Runtime = runtime;
        Logs = logs;
    }

    public MoeNodeRuntime Runtime { get; }
    public LogCapture Logs { get; }
    public MoeEngine Engine => Runtime.Engine ?? throw new InvalidOperationException("not a gateway node");
    public string Address => Runtime.Status.Address;
    /// <summary>host:port of this node's cluster endpoint, for --seed-nodes.</summary>
    public string SeedNode => new Uri(Address.Replace("akka.tcp://", "tcp://", StringComparison.Ordinal)).Authority;
    public Akka.Actor.ActorSystem System => _host.Services.GetRequiredService<Akka.Actor.ActorSystem>();

    /// <summary>Quick failure handling for tests that are not about its timing.</summary>
    private const string QuickFailureHandling = """
        moe.experts { ask-timeout = 2s, retry-deadline = 20s }
        akka.cluster.split-brain-resolver.stable-after = 5s
        akka.cluster.failure-detector.acceptable-heartbeat-pause = 4s
        """;

    /// <summary>Test defaults: exact fp32 weights, ephemeral port, quick failure handling unless
    /// <paramref name="shippedTimings"/> (the failure detector, split-brain resolver and expert timeouts of hocon/).</summary>
    public static string Overrides(string model, NodeRole role, string? seed, string? extra = null, bool shippedTimings = false) => $$"""
        moe.node {
          model = "{{model.Replace("\\", "/", StringComparison.Ordinal)}}"
          precision = f32
          cluster-port = 0
          seed-nodes = [{{(seed is null ? "" : "\"" + seed + "\"")}}]
          # a freeze of the test process must not end it (the fence exits the process)
          pause-fence = off
        }
        {{(shippedTimings ? "" : QuickFailureHandling)}}
        akka.loglevel = INFO
        {{extra ?? ""}}
        """;

    public static async Task<TestNode> StartAsync(string model, NodeRole role, string? seed = null, string? extra = null, bool shippedTimings = false)
    {
        var settings = MoeSettings.Load(role, Overrides(model, role, seed, extra, shippedTimings));
        var logs = new LogCapture();
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Logging.AddProvider(logs);
        builder.Services.AddMoeNode(settings);
        var host = builder.Build();
        await host.StartAsync();
        return new TestNode(host, host.Services.GetRequiredService<MoeNodeRuntime>(), logs);
    }

    /// <summary>Waits until /ready would say ready (member up; gateway: every expert answered).</summary>
    public async Task WaitReadyAsync(TimeSpan? timeout = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(60));
        while (true)
        {
            var (ready, reason) = Runtime.Status.Readiness();
            if (ready) return;
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"node {Address} not ready: {reason}");
            await Task.Delay(100);
        }
    }

    /// <summary>Graceful stop (coordinated shutdown: leave the cluster, hand off shards).</summary>
    public async Task StopAsync()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await _host.StopAsync(cts.Token);
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            await StopAsync();
        }
        catch (Exception)
        {
            // already stopped or failed; dispose anyway
        }
        _host.Dispose();
        Runtime.Dispose();
    }
}
