using System.Globalization;

namespace MoeServer.Gateway.Tests.Fuzzing;

/// <summary>
/// Reads a node's /metrics and checks that what requests hold is back at its idle baseline: nothing running or
/// waiting, no KV-cache bytes reserved or allocated, no generation actor alive, no request stream open, no API
/// request holding engine streams, and the prefix cache within its budget.
/// </summary>
public static class MetricsBaseline
{
    /// <summary>The gauges that must be 0 when the node is idle.</summary>
    public static readonly string[] IdleZero =
    [
        "moe_requests_running", "moe_requests_waiting", "moe_kv_cache_reserved_bytes", "moe_kv_cache_allocated_bytes",
        "moe_generation_actors", "moe_request_streams_open", "moe_api_requests_open",
    ];

    /// <summary>Unlabelled samples of the exposition text (name -> value).</summary>
    public static Dictionary<string, double> Parse(string text)
    {
        var values = new Dictionary<string, double>();
        foreach (string line in text.Split('\n'))
        {
            if (line.Length == 0 || line[0] == '#') continue;
            int space = line.LastIndexOf(' ');
            if (space <= 0) continue;
            string name = line[..space];
            if (name.Contains('{', StringComparison.Ordinal)) continue;
            if (double.TryParse(line[(space + 1)..], NumberStyles.Float, CultureInfo.InvariantCulture, out double v)) values[name] = v;
        }
        return values;
    }

    public static async Task<Dictionary<string, double>> ReadAsync(HttpClient http) =>
        Parse(await http.GetStringAsync("/metrics").ConfigureAwait(false));

    /// <summary>Polls /metrics until every <see cref="IdleZero"/> gauge is 0 (and the prefix cache within
    /// <paramref name="prefixBudgetBytes"/> when given); throws with the last values otherwise.</summary>
    public static async Task<Dictionary<string, double>> WaitForIdleAsync(HttpClient http, TimeSpan timeout, long? prefixBudgetBytes = null)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var m = await ReadAsync(http).ConfigureAwait(false);
            var busy = IdleZero.Where(n => !m.TryGetValue(n, out double v) || v != 0).ToList();
            if (prefixBudgetBytes is { } budget && m.GetValueOrDefault("moe_prefix_cache_bytes") > budget) busy.Add("moe_prefix_cache_bytes");
            if (busy.Count == 0) return m;
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException("not back at the idle baseline after " + timeout.TotalSeconds + " s: " +
                    string.Join(", ", busy.Select(n => $"{n} = {(m.TryGetValue(n, out double v) ? v.ToString(CultureInfo.InvariantCulture) : "missing")}")));
            }
            await Task.Delay(200).ConfigureAwait(false);
        }
    }
}
