namespace MoeServer.Actors.Cluster;

/// <summary>Exit codes of the server executable (README: "What survives what").</summary>
public static class NodeExitCodes
{
    /// <summary>Could not start: a broken model, a port in use, the ActorSystem failed.</summary>
    public const int StartFailed = 1;
    /// <summary>Bad command line or configuration.</summary>
    public const int Usage = 2;
    /// <summary>The cluster removed this node (downed after it was unreachable, e.g. hung or partitioned). A downed Akka
    /// node can never rejoin under the same identity: restart the process and it joins as a new member.</summary>
    public const int DownedByCluster = 3;
}
