using Akka.Configuration;
using MoeServer.Actors.Experts;
using MoeServer.Actors.Scheduling;

namespace MoeServer.Actors.Hosting;

/// <summary>
/// The merged configuration of one node: command-line / test overrides, then the role's HOCON file, then
/// hocon/base.hocon (copied next to the binaries). The typed options are read from the result.
/// </summary>
public sealed class MoeSettings
{
    private MoeSettings(Config hocon)
    {
        Hocon = hocon;
        Node = MoeNodeOptions.FromConfig(hocon);
        Scheduler = SchedulerOptions.FromConfig(hocon);
        Experts = ExpertOptions.FromConfig(hocon);
    }

    public Config Hocon { get; }
    public MoeNodeOptions Node { get; }
    public SchedulerOptions Scheduler { get; }
    public ExpertOptions Experts { get; }

    /// <summary>Directory of the shipped HOCON files.</summary>
    public static string HoconDirectory => Path.Combine(AppContext.BaseDirectory, "hocon");

    /// <summary>The HOCON file that documents a role's defaults.</summary>
    public static string RoleFile(NodeRole role) => role switch
    {
        NodeRole.All => "single-node.hocon",
        NodeRole.Gateway => "cluster-gateway.hocon",
        _ => "cluster-expert.hocon",
    };

    /// <param name="role">Selects the role file; null reads the role from the overrides (default all).</param>
    /// <param name="overrides">HOCON that wins over the files (command line, tests).</param>
    public static MoeSettings Load(NodeRole? role = null, string? overrides = null, string? extraFile = null)
    {
        string dir = HoconDirectory;
        var baseConfig = ReadFile(Path.Combine(dir, "base.hocon"));
        var over = string.IsNullOrWhiteSpace(overrides) ? Config.Empty : ConfigurationFactory.ParseString(overrides);
        if (extraFile is not null) over = over.WithFallback(ReadFile(extraFile));
        var r = role ?? (over.HasPath("moe.node.role") ? NodeRoles.Parse(over.GetString("moe.node.role")) : NodeRole.All);
        var roleConfig = ReadFile(Path.Combine(dir, RoleFile(r)));
        var merged = over.WithFallback(roleConfig).WithFallback(baseConfig);
        // The role given explicitly wins over whatever the files say.
        merged = ConfigurationFactory.ParseString($"moe.node.role = {r.ToString().ToLowerInvariant()}").WithFallback(merged);
        return new MoeSettings(merged);
    }

    private static Config ReadFile(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"configuration file {path} is missing", path);
        try
        {
            return ConfigurationFactory.ParseString(File.ReadAllText(path));
        }
        catch (Exception ex) when (ex is not FileNotFoundException)
        {
            throw new ConfigurationException($"{path}: {ex.Message}");
        }
    }
}
