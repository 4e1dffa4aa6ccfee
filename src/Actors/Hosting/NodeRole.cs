namespace MoeServer.Actors.Hosting;

/// <summary>What a process runs: both halves (embedded single node), the gateway half, or expert entities.</summary>
public enum NodeRole
{
    All,
    Gateway,
    Expert,
}

public static class NodeRoles
{
    public const string GatewayRole = "gateway";
    public const string ExpertRole = "expert";

    public static NodeRole Parse(string value) => value.Trim().ToLowerInvariant() switch
    {
        "all" => NodeRole.All,
        "gateway" => NodeRole.Gateway,
        "expert" => NodeRole.Expert,
        _ => throw new ArgumentException($"unknown role '{value}': expected all, gateway or expert"),
    };

    public static bool RunsGateway(this NodeRole r) => r is NodeRole.All or NodeRole.Gateway;
    public static bool RunsExperts(this NodeRole r) => r is NodeRole.All or NodeRole.Expert;

    /// <summary>Akka cluster roles of a process role.</summary>
    public static string[] ClusterRoles(this NodeRole r) => r switch
    {
        NodeRole.All => [GatewayRole, ExpertRole],
        NodeRole.Gateway => [GatewayRole],
        _ => [ExpertRole],
    };
}
