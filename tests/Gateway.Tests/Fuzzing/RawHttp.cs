using System.Net.Sockets;
using System.Text;

namespace MoeServer.Gateway.Tests.Fuzzing;

/// <summary>How the request's bytes go on the wire.</summary>
public enum SendMode
{
    /// <summary>All at once.</summary>
    Whole,
    /// <summary>The body in small pieces with pauses between them.</summary>
    Slow,
    /// <summary>Content-Length promises more than is sent; the client then half-closes its side.</summary>
    Truncated,
    /// <summary>The client closes the connection right after sending (a client that goes away).</summary>
    Abort,
}

/// <summary>One raw HTTP/1.1 exchange: what came back (status, headers, de-chunked body), or nothing when the server
/// closed the connection without answering.</summary>
public sealed record RawResponse(int Status, IReadOnlyDictionary<string, string> Headers, byte[] Body, bool Complete)
{
    public static RawResponse Closed { get; } = new(0, new Dictionary<string, string>(), [], false);

    public string? Header(string name) => Headers.TryGetValue(name, out var v) ? v : null;

    public string BodyText => Encoding.UTF8.GetString(Body);
}

/// <summary>
/// A minimal HTTP/1.1 client over a raw socket, so a fuzz case can send what HttpClient refuses to: broken framing,
/// truncated and slow bodies, invalid header values. Every request is sent with <c>Connection: close</c> and the
/// response read to the end of the connection.
/// </summary>
public static class RawHttp
{
    public static async Task<RawResponse> SendAsync(Uri server, byte[] head, byte[] body, SendMode mode, TimeSpan slowPause, CancellationToken ct)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        await socket.ConnectAsync(server.Host, server.Port, ct).ConfigureAwait(false);
        try
        {
            await SendAllAsync(socket, head, ct).ConfigureAwait(false);
            switch (mode)
            {
                case SendMode.Slow:
                    int piece = Math.Max(1, body.Length / 6);
                    for (int i = 0; i < body.Length; i += piece)
                    {
                        await SendAllAsync(socket, body.AsMemory(i, Math.Min(piece, body.Length - i)), ct).ConfigureAwait(false);
                        await Task.Delay(slowPause, ct).ConfigureAwait(false);
                    }
                    break;
                case SendMode.Truncated:
                    await SendAllAsync(socket, body, ct).ConfigureAwait(false);
                    socket.Shutdown(SocketShutdown.Send);
                    break;
                case SendMode.Abort:
                    await SendAllAsync(socket, body, ct).ConfigureAwait(false);
                    await Task.Delay(slowPause, ct).ConfigureAwait(false);
                    return RawResponse.Closed;
                default:
                    await SendAllAsync(socket, body, ct).ConfigureAwait(false);
                    break;
            }
        }
        catch (SocketException)
        {
            // The server may answer (e.g. 413 or 431) and close before the whole request is sent: read what it said.
        }
        return await ReadResponseAsync(socket, ct).ConfigureAwait(false);
    }

    private static async Task SendAllAsync(Socket socket, ReadOnlyMemory<byte> data, CancellationToken ct)
    {
        while (data.Length > 0)
        {
            int n = await socket.SendAsync(data, SocketFlags.None, ct).ConfigureAwait(false);
            data = data[n..];
        }
    }

    private static async Task<RawResponse> ReadResponseAsync(Socket socket, CancellationToken ct)
    {
        var all = new MemoryStream();
        var buffer = new byte[16 * 1024];
        try
        {
            while (true)
            {
                int n = await socket.ReceiveAsync(buffer, SocketFlags.None, ct).ConfigureAwait(false);
                if (n == 0) break;
                all.Write(buffer, 0, n);
            }
        }
        catch (SocketException)
        {
            // reset by the server after (or instead of) an answer
        }
        return Parse(all.ToArray());
    }

    /// <summary>Status line, headers and body (de-chunked); <see cref="RawResponse.Complete"/> is false when the body
    /// ended before its length or last chunk.</summary>
    public static RawResponse Parse(byte[] data)
    {
        // Interim answers (100 Continue to "Expect: 100-continue") come before the final one.
        while (data.AsSpan().StartsWith("HTTP/1.1 1"u8) && IndexOf(data, "\r\n\r\n"u8, 0) is >= 0 and var interimEnd)
            data = data[(interimEnd + 4)..];
        int headEnd = IndexOf(data, "\r\n\r\n"u8, 0);
        if (headEnd < 0) return RawResponse.Closed;
        string[] lines = Encoding.ASCII.GetString(data, 0, headEnd).Split("\r\n");
        string[] status = lines[0].Split(' ', 3);
        if (status.Length < 2 || !int.TryParse(status[1], out int code)) return RawResponse.Closed;
        var headers = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (string line in lines.Skip(1))
        {
            int colon = line.IndexOf(':', StringComparison.Ordinal);
            if (colon > 0) headers[line[..colon].Trim()] = line[(colon + 1)..].Trim();
        }
        int start = headEnd + 4;
        var rest = data.AsSpan(start);
        if (headers.TryGetValue("Transfer-Encoding", out var te) && te.Contains("chunked", StringComparison.OrdinalIgnoreCase))
        {
            var body = new MemoryStream();
            int pos = 0;
            while (true)
            {
                int eol = IndexOf(rest, "\r\n"u8, pos);
                if (eol < 0) return new RawResponse(code, headers, body.ToArray(), false);
                string sizeText = Encoding.ASCII.GetString(rest[pos..eol]).Split(';')[0].Trim();
                if (!int.TryParse(sizeText, System.Globalization.NumberStyles.HexNumber, null, out int size))
                    return new RawResponse(code, headers, body.ToArray(), false);
                pos = eol + 2;
                if (size == 0) return new RawResponse(code, headers, body.ToArray(), true);
                if (pos + size > rest.Length) return new RawResponse(code, headers, body.ToArray(), false);
                body.Write(rest.Slice(pos, size));
                pos += size + 2;
            }
        }
        if (headers.TryGetValue("Content-Length", out var cl) && long.TryParse(cl, out long length))
            return new RawResponse(code, headers, rest[..(int)Math.Min(length, rest.Length)].ToArray(), rest.Length >= length);
        return new RawResponse(code, headers, rest.ToArray(), true);
    }

    private static int IndexOf(ReadOnlySpan<byte> data, ReadOnlySpan<byte> what, int from)
    {
        int i = data[from..].IndexOf(what);
        return i < 0 ? -1 : from + i;
    }
}
