using System.Text.Json.Serialization;

namespace MoeServer.Gateway.OpenAi;

/// <summary>The body of every error response: <c>{"error":{"message","type","param","code"}}</c> as OpenAI sends it.</summary>
public sealed record OpenAiErrorBody([property: JsonPropertyName("error")] OpenAiErrorDetail Error);

public sealed record OpenAiErrorDetail(
    [property: JsonPropertyName("message")] string Message,
    [property: JsonPropertyName("type")] string Type,
    // OpenAI always sends param and code, null when they do not apply.
    [property: JsonPropertyName("param"), JsonIgnore(Condition = JsonIgnoreCondition.Never)] string? Param,
    [property: JsonPropertyName("code"), JsonIgnore(Condition = JsonIgnoreCondition.Never)] string? Code);

/// <summary>A request the API refuses, with the HTTP status and OpenAI error fields to answer with.</summary>
public sealed class OpenAiException(int status, string message, string type, string? param = null, string? code = null)
    : Exception(message)
{
    public int Status { get; } = status;
    public string Type { get; } = type;
    public string? Param { get; } = param;
    public string? Code { get; } = code;

    public OpenAiErrorBody ToBody() => new(new OpenAiErrorDetail(Message, Type, Param, Code));

    /// <summary>400: a field is invalid; <paramref name="param"/> names it.</summary>
    public static OpenAiException Invalid(string param, string message, string? code = null) =>
        new(StatusCodes.Status400BadRequest, message, "invalid_request_error", param, code);
}
