using Akka.Configuration;
using MoeServer.Gateway.Options;

namespace MoeServer.Gateway.Ops;

/// <summary><c>moe.ops</c>: who may use the ops surface (/ops/*), where it listens and how long it waits for nodes
/// (hocon/base.hocon).</summary>
public sealed record OpsOptions
{
    /// <summary>Bearer token every ops call must carry; empty: loopback callers only.</summary>
    public string Token { get; init; } = "";
    public TimeSpan AskTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>Addresses of a listener of its own for the ops surface; empty: /ops/* is served beside the API.</summary>
    public IReadOnlyList<string> Urls { get; init; } = [];

    /// <summary>The ports of <see cref="Urls"/>: a connection to one of them is an ops connection.</summary>
    public IReadOnlySet<int> Ports => Urls.Select(u => PortOf(u, "moe.ops.urls")).ToHashSet();

    /// <summary>From HOCON; the environment variable MOE_OPS_TOKEN wins when set.</summary>
    public static OpsOptions FromConfig(Config c)
    {
        var o = new OpsOptions
        {
            Token = Environment.GetEnvironmentVariable("MOE_OPS_TOKEN") is { Length: > 0 } env ? env : c.GetString("moe.ops.token", ""),
            AskTimeout = c.GetTimeSpan("moe.ops.ask-timeout", TimeSpan.FromSeconds(5)),
            Urls = c.HasPath("moe.ops.urls") ? c.GetStringList("moe.ops.urls").ToArray() : [],
        };
        _ = o.Ports; // validates every URL now rather than on the first request
        return o;
    }

    /// <summary>The API's addresses must not use an ops port (the port tells the two apart).</summary>
    /// <exception cref="ArgumentException">an API address on an ops port</exception>
    public void CheckApiUrls(IEnumerable<string> apiUrls)
    {
        var ports = Ports;
        foreach (var url in apiUrls)
            if (ListenUrl.TryParse(url, out var u, out _) && ports.Contains(u.Port))
                throw new ArgumentException($"{url}: port {u.Port} is the ops listener's (moe.ops.urls / --ops-urls); the API needs another");
    }

    /// <summary>The explicit port of an ops URL: the listener is told apart from the API's by its port, so port 0 (any
    /// free port) cannot be used.</summary>
    /// <exception cref="ArgumentException">not an http(s) URL with an explicit port</exception>
    public static int PortOf(string url, string setting)
    {
        if (!ListenUrl.TryParse(url, out var uri, out bool explicitPort))
            throw new ArgumentException($"{setting}: '{url}' is not an http:// or https:// URL");
        if (!explicitPort || uri.Port is <= 0 or > 65535)
            throw new ArgumentException($"{setting}: '{url}' needs an explicit port from 1 to 65535 (the ops listener is told apart from the API's by its port)");
        return uri.Port;
    }
}
