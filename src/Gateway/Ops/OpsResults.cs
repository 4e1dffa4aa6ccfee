namespace MoeServer.Gateway.Ops;

/// <summary>Ops answers: JSON bodies, errors shaped like the API's (<c>{"error":{"message","type","code"}}</c>).</summary>
internal static class OpsResults
{
    public static IResult Error(int status, string code, string message) =>
        Results.Json(new { error = new { message, type = "ops_error", code } }, statusCode: status);
}
