namespace MoeServer.Ops;

/// <summary>A failure moectl reports in one line and an exit code (2: usage, 3: unreachable, 4: refused token,
/// 5: the cluster refused or does not know the thing asked for).</summary>
public sealed class OpsCliException(string message, int exitCode) : Exception(message)
{
    public int ExitCode { get; } = exitCode;

    public const int Usage = 2;
    public const int Unreachable = 3;
    public const int Unauthorized = 4;
    public const int Refused = 5;
}
