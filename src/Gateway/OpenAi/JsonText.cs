using System.Text.Json;

namespace MoeServer.Gateway.OpenAi;

/// <summary>String values of request JSON read after deserialization (<see cref="JsonElement"/> fields).</summary>
internal static class JsonText
{
    /// <summary>The element's string, or a 400 naming <paramref name="field"/> when it is not valid UTF-16 text: JSON may
    /// escape an unpaired surrogate (<c>"\udc00"</c>), which <see cref="JsonElement.GetString"/> refuses with an
    /// InvalidOperationException (inside the deserializer the same refusal becomes a JsonException, a 400).</summary>
    public static string Of(JsonElement element, string field)
    {
        try
        {
            return element.GetString() ?? "";
        }
        catch (InvalidOperationException e) when (element.ValueKind == JsonValueKind.String)
        {
            throw OpenAiException.Invalid(field, $"{field} is not valid text: {e.Message}");
        }
    }
}
