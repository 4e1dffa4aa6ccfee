using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;

namespace MoeServer.Ops;

/// <summary>HTTP calls to a node's ops surface; every failure becomes an <see cref="OpsCliException"/> that says what
/// went wrong in the operator's terms.</summary>
public sealed class OpsClient : IDisposable
{
    private readonly HttpClient _http;

    public OpsClient(Uri endpoint, string? token, TimeSpan timeout)
    {
        Endpoint = endpoint;
        _http = new HttpClient { BaseAddress = endpoint, Timeout = timeout };
        if (!string.IsNullOrEmpty(token)) _http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
    }

    public Uri Endpoint { get; }

    public Task<JsonElement> GetAsync(string path) => SendAsync(HttpMethod.Get, path);

    public Task<JsonElement> PostAsync(string path) => SendAsync(HttpMethod.Post, path);

    private async Task<JsonElement> SendAsync(HttpMethod method, string path)
    {
        HttpResponseMessage response;
        try
        {
            response = await _http.SendAsync(new HttpRequestMessage(method, path)).ConfigureAwait(false);
        }
        catch (HttpRequestException ex)
        {
            throw new OpsCliException($"cannot reach {Endpoint}: {ex.Message}", OpsCliException.Unreachable);
        }
        catch (TaskCanceledException)
        {
            throw new OpsCliException($"{Endpoint} did not answer within {_http.Timeout.TotalSeconds:0} s", OpsCliException.Unreachable);
        }
        using (response)
        {
            string body = await response.Content.ReadAsStringAsync().ConfigureAwait(false);
            if (response.IsSuccessStatusCode) return Parse(body);
            string message = ErrorMessage(body) ?? $"{(int)response.StatusCode} {response.ReasonPhrase}";
            throw response.StatusCode switch
            {
                HttpStatusCode.Unauthorized => new OpsCliException($"{Endpoint}: {message}", OpsCliException.Unauthorized),
                HttpStatusCode.Forbidden => new OpsCliException($"{Endpoint}: {message}", OpsCliException.Unauthorized),
                HttpStatusCode.NotFound when ErrorMessage(body) is null => new OpsCliException(
                    $"{Endpoint} has no ops surface at {path} (is it a MoE Server node?)", OpsCliException.Unreachable),
                _ => new OpsCliException(message, OpsCliException.Refused),
            };
        }
    }

    /// <summary>Reads a server-sent event stream, handing each event's JSON to <paramref name="onEvent"/> until
    /// <paramref name="cancel"/> fires or the server ends the stream.</summary>
    public async Task StreamAsync(string path, Action<JsonElement> onEvent, CancellationToken cancel)
    {
        using var streaming = new HttpClient { BaseAddress = Endpoint, Timeout = Timeout.InfiniteTimeSpan };
        if (_http.DefaultRequestHeaders.Authorization is { } auth) streaming.DefaultRequestHeaders.Authorization = auth;
        HttpResponseMessage response;
        try
        {
            response = await streaming.GetAsync(path, HttpCompletionOption.ResponseHeadersRead, cancel).ConfigureAwait(false);
        }
        catch (HttpRequestException ex)
        {
            throw new OpsCliException($"cannot reach {Endpoint}: {ex.Message}", OpsCliException.Unreachable);
        }
        using (response)
        {
            if (!response.IsSuccessStatusCode)
            {
                string body = await response.Content.ReadAsStringAsync(CancellationToken.None).ConfigureAwait(false);
                string message = ErrorMessage(body) ?? $"{(int)response.StatusCode} {response.ReasonPhrase}";
                throw new OpsCliException($"{Endpoint}: {message}",
                    response.StatusCode is HttpStatusCode.Unauthorized or HttpStatusCode.Forbidden ? OpsCliException.Unauthorized : OpsCliException.Refused);
            }
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(cancel).ConfigureAwait(false));
            try
            {
                while (await reader.ReadLineAsync(cancel).ConfigureAwait(false) is { } line)
                    if (line.StartsWith("data: ", StringComparison.Ordinal)) onEvent(Parse(line[6..]));
            }
            catch (OperationCanceledException) when (cancel.IsCancellationRequested)
            {
                // Ctrl+C: the tail ends here
            }
            catch (IOException) when (cancel.IsCancellationRequested)
            {
            }
        }
    }

    private static JsonElement Parse(string body)
    {
        using var doc = JsonDocument.Parse(body);
        return doc.RootElement.Clone();
    }

    private static string? ErrorMessage(string body)
    {
        try
        {
            using var doc = JsonDocument.Parse(body);
            return doc.RootElement.TryGetProperty("error", out var e) && e.TryGetProperty("message", out var m) ? m.GetString() : null;
        }
        catch (JsonException)
        {
            return null;
        }
    }

    public void Dispose() => _http.Dispose();
}
