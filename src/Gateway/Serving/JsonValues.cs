using System.Collections;
using System.Text.Json;

namespace MoeServer.Gateway.Serving;

/// <summary>
/// Free-form request values (tools, tool-call arguments, template kwargs) as JSON: System.Text.Json hands them over as
/// <see cref="JsonElement"/>, SignalR's MessagePack protocol as maps, arrays and primitives.
/// </summary>
internal static class JsonValues
{
    public static JsonElement? ToElement(object? value) => value switch
    {
        null => null,
        JsonElement e => e,
        _ => JsonSerializer.SerializeToElement(Normalize(value)),
    };

    private static object? Normalize(object? value) => value switch
    {
        null or string or bool or JsonElement => value,
        IDictionary d => d.Keys.Cast<object>().ToDictionary(k => k as string ?? Convert.ToString(k, System.Globalization.CultureInfo.InvariantCulture)!, k => Normalize(d[k])),
        IEnumerable list => list.Cast<object?>().Select(Normalize).ToList(),
        _ when value.GetType().IsPrimitive || value is decimal => value,
        _ => throw new JsonException($"a value of type {value.GetType().Name} is not JSON"),
    };
}
