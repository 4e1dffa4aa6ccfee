using Akka.Actor;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using MoeServer.Actors.Cluster;
using MoeServer.Actors.Hosting;
using MoeServer.Gateway;
using MoeServer.Kernels.Checkpoints;

// The server: one node of the MoE cluster (gateway, expert, or both) with its HTTP surface.
// stdout carries the log plus machine-readable lines: "cluster address akka.tcp://...", "listening on http://..." and,
// with an ops listener, "ops surface on http://...".
ServerCommandLine cl;
try
{
    cl = ServerCommandLine.Parse(args);
}
catch (UsageException e)
{
    return UsageError(e.Message);
}
if (cl.Help)
{
    Console.WriteLine(ServerCommandLine.Usage);
    return 0;
}

using var bootLoggers = LoggerFactory.Create(ConsoleLogging.Configure);
var boot = bootLoggers.CreateLogger("MoeServer.Gateway");

MoeSettings settings;
IReadOnlySet<int> opsPorts;
try
{
    settings = MoeSettings.Load(cl.Role, cl.ToHocon(), cl.ConfigFile);
    if (string.IsNullOrWhiteSpace(settings.Node.ModelDir))
    {
        string dir = DefaultModel.Resolve(null, m => boot.LogInformation("{Message}", m));
        settings = MoeSettings.Load(cl.Role, cl.ToHocon(modelOverride: dir), cl.ConfigFile);
    }
    else if (cl.Model is null)
    {
        ServerCommandLine.CheckModelDir("moe.node.model", settings.Node.ModelDir);
    }
    _ = settings.Node.SeedAddresses(); // host:port check of seed nodes that came from a --config file
    var ops = MoeServer.Gateway.Ops.OpsOptions.FromConfig(settings.Hocon); // moe.ops.urls may come from a --config file
    ops.CheckApiUrls(cl.Urls);
    opsPorts = ops.Ports;
}
catch (Exception e) when (e is UsageException or ArgumentException or FormatException or IOException
                              or Akka.Configuration.ConfigurationException)
{
    return UsageError(e is UsageException ? e.Message : $"bad configuration: {e.Message}");
}

var node = settings.Node;
boot.LogInformation("starting node: role {Role}, model {Model}, device {Device}, precision {Precision}",
    node.Role.ToString().ToLowerInvariant(), node.ModelDir, node.Device, node.Precision);
WebApplication app;
try
{
    app = GatewayApp.Create(settings, cl.Urls, m => boot.LogInformation("{Message}", m));
}
catch (Exception e)
{
    boot.LogCritical("cannot start the node: {Error}", e.GetBaseException().Message);
    boot.LogDebug(e, "start-up failure");
    return 1;
}
var runtime = app.Services.GetRequiredService<MoeNodeRuntime>();
try
{
    try
    {
        await app.StartAsync().ConfigureAwait(false);
    }
    catch (Exception e)
    {
        boot.LogCritical(e, "cannot start the server: {Error}", e.GetBaseException().Message);
        await StopAfterFailedStartAsync(app).ConfigureAwait(false);
        return 1;
    }
    var lifetime = app.Lifetime;
    if (lifetime.ApplicationStopping.IsCancellationRequested) // e.g. the ActorSystem failed to start
    {
        await StopAfterFailedStartAsync(app).ConfigureAwait(false);
        return 1;
    }

    // Downed: the ActorSystem's coordinated shutdown stops the host; should anything keep it from stopping, the
    // process is ended a minute later all the same (a downed node can never serve again).
    _ = runtime.Status.WhenDowned.ContinueWith(_ => Task.Delay(TimeSpan.FromMinutes(1))
        .ContinueWith(_ => PauseFence.ExitDowned(TimeSpan.Zero), TaskScheduler.Default), TaskScheduler.Default);
    var system = app.Services.GetRequiredService<ActorSystem>();
    Console.WriteLine($"cluster address {((ExtendedActorSystem)system).Provider.DefaultAddress}");
    var addresses = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses ?? [];
    foreach (var address in addresses)
        Console.WriteLine(opsPorts.Contains(new Uri(address).Port) ? $"ops surface on {address}" : $"listening on {address}");

    await app.WaitForShutdownAsync().ConfigureAwait(false);
    if (runtime.Status.DownedByCluster)
    {
        boot.LogError("exiting with code {Code}: the cluster downed this node; restart it to rejoin as a new member", NodeExitCodes.DownedByCluster);
        return NodeExitCodes.DownedByCluster;
    }
    return 0;
}
finally
{
    await app.DisposeAsync().ConfigureAwait(false); // the ActorSystem is gone before the weights are freed
    runtime.Dispose();
}

// Stops whatever did start (Kestrel, the ActorSystem); a host whose start failed early may refuse to stop.
static async Task StopAfterFailedStartAsync(WebApplication app)
{
    try
    {
        await app.StopAsync(TimeSpan.FromSeconds(30)).ConfigureAwait(false);
    }
    catch (Exception e) when (e is ArgumentNullException or InvalidOperationException or OperationCanceledException or AggregateException)
    {
        // The start failure is already logged; Host.StopAsync throws ArgumentNullException when no hosted service started.
    }
}

static int UsageError(string message)
{
    Console.Error.WriteLine($"error: {message}");
    Console.Error.WriteLine("run with --help for the options");
    return 2;
}

internal static class ConsoleLogging
{
    /// <summary>Single-line console log with timestamps, for the boot logger and the host alike.</summary>
    public static void Configure(ILoggingBuilder logging)
    {
        logging.AddSimpleConsole(o =>
        {
            o.SingleLine = true;
            o.TimestampFormat = "yyyy-MM-dd HH:mm:ss.fff ";
            o.IncludeScopes = false;
        });
        logging.SetMinimumLevel(LogLevel.Information);
        logging.AddFilter("Microsoft.AspNetCore", LogLevel.Warning);
        // An unhealthy /ready is an answer, not an error (it is logged as one on every probe while starting).
        logging.AddFilter("Microsoft.Extensions.Diagnostics.HealthChecks", LogLevel.Critical);
    }
}
