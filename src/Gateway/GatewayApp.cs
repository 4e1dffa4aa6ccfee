using Microsoft.AspNetCore.SignalR;
using MoeServer.Actors.Hosting;
using MoeServer.Gateway.Hubs;
using MoeServer.Gateway.Metrics;
using MoeServer.Gateway.Middleware;
using MoeServer.Gateway.OpenAi;
using MoeServer.Gateway.Ops;
using MoeServer.Gateway.Options;
using MoeServer.Gateway.Serving;
using OpenTelemetry.Exporter;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;

namespace MoeServer.Gateway;

/// <summary>
/// Composes one server node: the MoE node (actor system, model parts, engine) and its HTTP surface. Every role
/// serves /health, /ready and /metrics; roles that run the gateway add the OpenAI API, the chat hub and the chat page.
/// Used by the executable and, in-process, by tests and benchmarks.
/// </summary>
public static class GatewayApp
{
    /// <summary>Builds (does not start) the web application of a node.</summary>
    public static WebApplication Create(MoeSettings settings, IReadOnlyList<string> urls, Action<string>? progress = null,
        Action<ILoggingBuilder>? logging = null)
    {
        var options = GatewayOptions.FromConfig(settings.Hocon);
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = [], ContentRootPath = AppContext.BaseDirectory });
        builder.Logging.ClearProviders();
        (logging ?? ConsoleLogging.Configure)(builder.Logging);
        // Hub-method failures are logged by HubFailureLogging (refusals are not errors); see there.
        builder.Logging.AddFilter(Hubs.HubFailureLogging.DispatcherCategory, LogLevel.Critical);
        var recentLogs = new RecentLogs();
        builder.Logging.AddProvider(recentLogs);
        var opsOptions = Ops.OpsOptions.FromConfig(settings.Hocon);
        opsOptions.CheckApiUrls(urls);
        builder.WebHost.UseUrls([.. urls, .. opsOptions.Urls]);
        builder.WebHost.ConfigureKestrel(k => k.Limits.MaxRequestBodySize = options.MaxRequestBodyBytes);
        // SIGTERM: stop taking HTTP requests, let a gateway drain its running generations, then leave the cluster.
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromMinutes(2));
        builder.Services.AddSingleton(options);
        builder.Services.AddSingleton(opsOptions);
        builder.Services.AddSingleton(recentLogs);
        builder.Services.AddMoeNode(settings, progress);
        builder.Services.AddNodeHealthChecks();
        builder.Services.AddSingleton(sp =>
        {
            var runtime = sp.GetRequiredService<MoeNodeRuntime>();
            return new ServerMetrics(runtime.Engine, runtime.ExpertWork, runtime.ExpertResidency, runtime.ExpertFailover);
        });
        bool gateway = settings.Node.Role.RunsGateway();
        if (gateway)
        {
            builder.Services.AddSingleton<ExpertReadinessProbe>();
            builder.Services.AddSingleton(sp => new ServedModel(
                sp.GetRequiredService<MoeNodeRuntime>().Engine ?? throw new InvalidOperationException("the engine did not start"),
                settings.Node.ModelDir, options));
            builder.Services.AddSingleton(sp => new GenerationRunner(sp.GetRequiredService<ServedModel>().Engine, sp.GetRequiredService<ServerMetrics>()));
            builder.Services.AddSingleton<ApiContext>();
            builder.Services.AddSignalR(o =>
            {
                o.MaximumReceiveMessageSize = options.MaxRequestBodyBytes;
                o.EnableDetailedErrors = false; // HubException messages still reach the client
                o.AddFilter<HubFailureLogging>();
            }).AddMessagePackProtocol();
        }
        AddTracing(builder.Services, options, settings);

        var app = builder.Build();
        app.UseRequestIds();
        app.UseOpsAccess(opsOptions); // before API keys: a request on the wrong port is a 404 whatever its key
        app.UseApiKeys(options);
        app.MapNodeHealthEndpoints();
        app.MapOps();
        app.MapGet("/metrics", async ctx =>
        {
            ctx.Response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
            await ctx.RequestServices.GetRequiredService<ServerMetrics>().WriteAsync(ctx.Response.Body, ctx.RequestAborted).ConfigureAwait(false);
        });
        if (gateway)
        {
            app.UseDefaultFiles();
            app.UseStaticFiles();
            app.MapOpenAiApi();
            app.MapHub<ChatHub>(ChatHub.Path);
        }
        return app;
    }

    /// <summary>OpenTelemetry spans of the gateway and the engine, exported with OTLP when an endpoint is set.</summary>
    private static void AddTracing(IServiceCollection services, GatewayOptions options, MoeSettings settings)
    {
        if (string.IsNullOrWhiteSpace(options.OtlpEndpoint)) return;
        var protocol = options.OtlpProtocol.Trim().ToLowerInvariant() switch
        {
            "grpc" => OtlpExportProtocol.Grpc,
            "http/protobuf" or "http" => OtlpExportProtocol.HttpProtobuf,
            var p => throw new ArgumentException($"moe.gateway.otlp-protocol: unknown '{p}' (expected http/protobuf or grpc)"),
        };
        services.AddOpenTelemetry()
            .ConfigureResource(r => r.AddService("moe-server", serviceInstanceId: $"{settings.Node.Role.ToString().ToLowerInvariant()}@{settings.Node.Hostname}"))
            .WithTracing(t => t
                .AddSource(GatewayTracing.SourceName, Actors.EngineTracing.SourceName)
                .AddAspNetCoreInstrumentation(o => o.Filter = ctx => !ctx.Request.Path.StartsWithSegments("/metrics")
                    && !ctx.Request.Path.StartsWithSegments("/health") && !ctx.Request.Path.StartsWithSegments("/ready"))
                .AddOtlpExporter(o =>
                {
                    var endpoint = new Uri(options.OtlpEndpoint);
                    o.Protocol = protocol;
                    // The HTTP exporter takes the full traces URL; a bare host:port gets the standard path.
                    o.Endpoint = protocol == OtlpExportProtocol.HttpProtobuf && endpoint.AbsolutePath is "/" or ""
                        ? new Uri(endpoint, "/v1/traces")
                        : endpoint;
                }));
    }
}
