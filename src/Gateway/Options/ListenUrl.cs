namespace MoeServer.Gateway.Options;

/// <summary>Kestrel listen addresses (<c>http://127.0.0.1:8000</c>, also with the wildcard hosts <c>*</c> and <c>+</c>,
/// which are not valid URIs).</summary>
public static class ListenUrl
{
    /// <summary>An http(s) listen address as a URI (wildcard hosts read as a name), and whether it names its port.</summary>
    public static bool TryParse(string url, out Uri uri, out bool explicitPort)
    {
        string probe = url.Replace("://*", "://wildcard", StringComparison.Ordinal).Replace("://+", "://wildcard", StringComparison.Ordinal);
        explicitPort = false;
        if (!Uri.TryCreate(probe, UriKind.Absolute, out uri!) || uri.Scheme is not ("http" or "https")) return false;
        // the authority after "://" has a ':' only when a port is given (IPv6 hosts are bracketed)
        string authority = probe[(probe.IndexOf("://", StringComparison.Ordinal) + 3)..].Split('/')[0];
        explicitPort = authority.LastIndexOf(':') > authority.LastIndexOf(']');
        return true;
    }
}
