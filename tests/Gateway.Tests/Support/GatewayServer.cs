using System.Net.Http.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using MoeServer.Actors.Generation;
using MoeServer.Actors.Hosting;

namespace MoeServer.Gateway.Tests.Support;

/// <summary>
/// A real server node inside the test process: the same <see cref="GatewayApp"/> as the executable, real Kestrel on
/// 127.0.0.1 (ephemeral port), real ActorSystem on loopback TCP.
/// </summary>
public sealed class GatewayServer : IAsyncDisposable
{
    private readonly WebApplication _app;

    private GatewayServer(WebApplication app, Uri baseAddress)
    {
        _app = app;
        BaseAddress = baseAddress;
        Http = new HttpClient { BaseAddress = baseAddress, Timeout = TimeSpan.FromSeconds(120) };
    }

    public Uri BaseAddress { get; }
    public HttpClient Http { get; }
    public MoeNodeRuntime Runtime => _app.Services.GetRequiredService<MoeNodeRuntime>();
    public IServiceProvider Services => _app.Services;
    public MoeEngine Engine => Runtime.Engine ?? throw new InvalidOperationException("not a gateway node");
    public string SeedNode => new Uri(Runtime.Status.Address.Replace("akka.tcp://", "tcp://", StringComparison.Ordinal)).Authority;

    /// <summary>Starts a node serving <paramref name="model"/> (fp32 weights) with extra HOCON.</summary>
    public static async Task<GatewayServer> StartAsync(string model, string? extraHocon = null, NodeRole role = NodeRole.All,
        string? seed = null, bool waitReady = true)
    {
        var settings = MoeSettings.Load(role, $$"""
            moe.node {
              model = "{{model.Replace("\\", "/", StringComparison.Ordinal)}}"
              precision = f32
              cluster-port = 0
              seed-nodes = [{{(seed is null ? "" : "\"" + seed + "\"")}}]
              pause-fence = off # the fence exits the process: not the test host's
            }
            akka.loglevel = WARNING
            {{extraHocon ?? ""}}
            """);
        var app = GatewayApp.Create(settings, ["http://127.0.0.1:0"], logging: l => l.SetMinimumLevel(LogLevel.Warning).AddFilter("Microsoft", LogLevel.Error));
        await app.StartAsync();
        var opsPorts = Ops.OpsOptions.FromConfig(settings.Hocon).Ports; // an ops listener of its own is not the API's address
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First(a => !opsPorts.Contains(new Uri(a).Port));
        var server = new GatewayServer(app, new Uri(address));
        if (waitReady) await server.WaitReadyAsync();
        return server;
    }

    public async Task WaitReadyAsync(TimeSpan? timeout = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(90));
        string last = "";
        while (DateTime.UtcNow < deadline)
        {
            using var r = await Http.GetAsync("/ready");
            if (r.IsSuccessStatusCode) return;
            last = await r.Content.ReadAsStringAsync();
            await Task.Delay(200);
        }
        throw new TimeoutException($"{BaseAddress} not ready: {last}");
    }

    /// <summary>Waits until the engine runs and queues nothing (resources of finished or cancelled requests freed).</summary>
    public async Task WaitIdleAsync(TimeSpan? timeout = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(10));
        var g = Engine.Gauges;
        while (g.Running > 0 || g.Waiting > 0 || g.KvReservedBytes > 0)
        {
            if (DateTime.UtcNow > deadline)
            {
                var requests = await Engine.ListRequestsAsync();
                throw new TimeoutException($"engine still busy: {g.Running} running, {g.Waiting} waiting, {g.KvReservedBytes} KV bytes reserved; " +
                    string.Join("; ", requests.Select(r => r.ToString())));
            }
            await Task.Delay(50);
        }
    }

    public async Task<System.Text.Json.JsonElement> GetJsonAsync(string path) =>
        (await Http.GetFromJsonAsync<System.Text.Json.JsonElement>(path))!;

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        var runtime = Runtime;
        try
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            await _app.StopAsync(cts.Token);
        }
        finally
        {
            await _app.DisposeAsync(); // the ActorSystem is gone before the weights are freed
            runtime.Dispose();
        }
    }
}

/// <summary>One single-node server on the tiny checkpoint, shared by the tests of a class.</summary>
public sealed class SharedServer : IAsyncLifetime
{
    public GatewayServer Server { get; private set; } = null!;

    public async Task InitializeAsync() => Server = await GatewayServer.StartAsync(TinyModel.Dir);

    public async Task DisposeAsync() => await Server.DisposeAsync();
}
