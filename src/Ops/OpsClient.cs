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
