using System.Globalization;
using System.Text;
using MoeServer.Actors.Hosting;
using MoeServer.Gateway.Ops;
using MoeServer.Gateway.Options;

namespace MoeServer.Gateway;

/// <summary>A bad command line: reported on stderr with exit code 2.</summary>
internal sealed class UsageException(string message) : Exception(message);

/// <summary>
/// The server's command line. Options that map to <c>moe.node.*</c> become a HOCON overrides string that wins over the
/// --config file, the role's HOCON file and hocon/base.hocon (see <see cref="MoeSettings.Load"/>).
/// </summary>
internal sealed record ServerCommandLine
{
    public const string DefaultUrls = "http://127.0.0.1:8000";

    public const string Usage = """
        usage: MoeServer.Gateway [options]
           (from the repository: dotnet run --project src/Gateway -c Release -- [options])

          --role all|gateway|expert   what this process runs (default all: the embedded single node)
          --cluster-port N            Akka.Remote port of this node (0 = any free port)
          --hostname HOST             address other nodes reach this node at (default 127.0.0.1)
          --seed-nodes host:port,...  seed nodes of the cluster to join (none: this node forms its own cluster)
          --model DIR                 HF checkpoint directory (default models/readme-moe, the trained model in the repository)
          --device cpu|cuda:N         compute device of this node (default cpu)
          --precision bf16|f32        weight precision in memory (default bf16)
          --config FILE.hocon         extra HOCON; command-line options win over it, it wins over hocon/*.hocon
          --urls URL[;URL...]         HTTP addresses to listen on (default http://127.0.0.1:8000; port 0 = any free port)
          --ops-urls URL[;URL...]     a listener of its own for the ops surface (/ops/*, moectl), e.g. http://127.0.0.1:9000;
                                      its ports then serve only ops, health and metrics, and /ops/* leaves the --urls ports
          --help                      print this text

        HTTP: GET /health (liveness) and GET /ready (200 when the node serves, 503 with a reason otherwise).
        """;

    public bool Help { get; init; }
    public NodeRole? Role { get; init; }
    public int? ClusterPort { get; init; }
    public string? Hostname { get; init; }
    public IReadOnlyList<string>? SeedNodes { get; init; }
    public string? Model { get; init; }
    public string? Device { get; init; }
    public string? Precision { get; init; }
    public string? ConfigFile { get; init; }
    public IReadOnlyList<string> Urls { get; init; } = [DefaultUrls];
    public IReadOnlyList<string>? OpsUrls { get; init; }

    private static readonly HashSet<string> Known = new(StringComparer.Ordinal)
    {
        "role", "cluster-port", "hostname", "seed-nodes", "model", "device", "precision", "config", "urls", "ops-urls",
    };

    /// <exception cref="UsageException">unknown options, missing or bad values</exception>
    public static ServerCommandLine Parse(IReadOnlyList<string> args)
    {
        var values = new Dictionary<string, string>(StringComparer.Ordinal);
        bool help = false;
        for (int i = 0; i < args.Count; i++)
        {
            string a = args[i];
            if (a is "--help" or "-h")
            {
                help = true;
                continue;
            }
            if (!a.StartsWith("--", StringComparison.Ordinal) || a.Length == 2)
                throw new UsageException($"unexpected argument '{a}'");
            string name = a[2..];
            string? value = null;
            int eq = name.IndexOf('=', StringComparison.Ordinal);
            if (eq >= 0)
            {
                value = name[(eq + 1)..];
                name = name[..eq];
            }
            if (!Known.Contains(name)) throw new UsageException($"unknown option --{name}");
            if (value is null)
            {
                if (i + 1 >= args.Count) throw new UsageException($"option --{name} needs a value");
                value = args[++i];
            }
            if (!values.TryAdd(name, value)) throw new UsageException($"option --{name} given twice");
        }
        if (help) return new ServerCommandLine { Help = true };

        string? Get(string n) => values.TryGetValue(n, out var v) ? v : null;
        var cl = new ServerCommandLine
        {
            Role = Get("role") is { } r ? ParseRole(r) : null,
            ClusterPort = Get("cluster-port") is { } p ? ParsePort("--cluster-port", p, allowZero: true) : null,
            Hostname = Get("hostname") is { } h ? NonEmpty("--hostname", h) : null,
            SeedNodes = Get("seed-nodes") is { } s ? ParseSeedNodes(s) : null,
            Model = Get("model") is { } m ? NonEmpty("--model", m) : null,
            Device = Get("device") is { } d ? ParseDevice(d) : null,
            Precision = Get("precision") is { } pr ? ParsePrecision(pr) : null,
            ConfigFile = Get("config") is { } c ? ParseConfigFile(c) : null,
            Urls = Get("urls") is { } u ? ParseUrls(u) : [DefaultUrls],
            OpsUrls = Get("ops-urls") is { } ou ? ParseOpsUrls(ou) : null,
        };
        if (cl.Model is not null) CheckModelDir("--model", cl.Model);
        return cl;
    }

    /// <summary>The moe.node overrides of this command line as HOCON (values quoted as JSON strings).</summary>
    public string ToHocon(string? modelOverride = null)
    {
        var sb = new StringBuilder();
        void Line(string path, string value) => sb.Append(path).Append(" = ").Append(value).Append('\n');
        if (Role is { } role) Line("moe.node.role", Quote(role.ToString().ToLowerInvariant()));
        if (ClusterPort is { } port) Line("moe.node.cluster-port", port.ToString(CultureInfo.InvariantCulture));
        if (Hostname is not null) Line("moe.node.hostname", Quote(Hostname));
        if (SeedNodes is not null) Line("moe.node.seed-nodes", "[" + string.Join(", ", SeedNodes.Select(Quote)) + "]");
        if ((modelOverride ?? Model) is { } model) Line("moe.node.model", Quote(Path.GetFullPath(model)));
        if (Device is not null) Line("moe.node.device", Quote(Device));
        if (Precision is not null) Line("moe.node.precision", Quote(Precision));
        if (OpsUrls is not null) Line("moe.ops.urls", "[" + string.Join(", ", OpsUrls.Select(Quote)) + "]");
        return sb.ToString();
    }

    /// <summary>A HOCON quoted string (HOCON quoted strings are JSON strings).</summary>
    public static string Quote(string s)
    {
        var sb = new StringBuilder(s.Length + 2).Append('"');
        foreach (char ch in s)
        {
            switch (ch)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                default:
                    if (char.IsControl(ch)) sb.Append("\\u").Append(((int)ch).ToString("x4", CultureInfo.InvariantCulture));
                    else sb.Append(ch);
                    break;
            }
        }
        return sb.Append('"').ToString();
    }

    /// <summary>A model is an HF checkpoint directory holding config.json, or a GGUF file (the first part of a split
    /// one); it is read from there at start-up.</summary>
    public static void CheckModelDir(string source, string dir)
    {
        if (File.Exists(dir))
        {
            if (!Kernels.Formats.Gguf.GgufModel.IsGgufPath(dir))
                throw new UsageException($"{source}: '{dir}' is a file but not a GGUF file (no GGUF magic, no .gguf extension)");
            return;
        }
        if (!Directory.Exists(dir)) throw new UsageException($"{source}: directory or GGUF file '{dir}' does not exist");
        if (!File.Exists(Path.Combine(dir, "config.json")))
            throw new UsageException($"{source}: '{dir}' is not an HF checkpoint directory (no config.json)");
    }

    private static NodeRole ParseRole(string s) => s switch
    {
        "all" => NodeRole.All,
        "gateway" => NodeRole.Gateway,
        "expert" => NodeRole.Expert,
        _ => throw new UsageException($"--role must be all, gateway or expert, got '{s}'"),
    };

    private static int ParsePort(string option, string s, bool allowZero)
    {
        if (!int.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out int port) || port > 65535 || (port == 0 && !allowZero))
            throw new UsageException($"{option} must be a port number ({(allowZero ? 0 : 1)}..65535), got '{s}'");
        return port;
    }

    private static string NonEmpty(string option, string s) =>
        string.IsNullOrWhiteSpace(s) ? throw new UsageException($"{option} needs a non-empty value") : s;

    private static string[] ParseSeedNodes(string s)
    {
        var seeds = s.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        if (seeds.Length == 0) throw new UsageException("--seed-nodes needs at least one host:port");
        foreach (var seed in seeds)
        {
            int colon = seed.LastIndexOf(':');
            if (colon <= 0 || seed.IndexOf(':', StringComparison.Ordinal) != colon)
                throw new UsageException($"--seed-nodes: '{seed}' is not host:port");
            ParsePort($"--seed-nodes: port of '{seed}'", seed[(colon + 1)..], allowZero: false);
        }
        return seeds;
    }

    private static string ParseDevice(string s)
    {
        if (s == "cpu" || s == "cuda") return s;
        if (s.StartsWith("cuda:", StringComparison.Ordinal)
            && int.TryParse(s.AsSpan(5), NumberStyles.None, CultureInfo.InvariantCulture, out _)) return s;
        throw new UsageException($"--device must be cpu or cuda:N, got '{s}'");
    }

    private static string ParsePrecision(string s) => s is "bf16" or "f32"
        ? s : throw new UsageException($"--precision must be bf16 or f32, got '{s}'");

    private static string ParseConfigFile(string s) => File.Exists(s)
        ? Path.GetFullPath(s) : throw new UsageException($"--config: file '{s}' does not exist");

    private static string[] ParseUrls(string s) => SplitUrls("--urls", s, u =>
    {
        if (!ListenUrl.TryParse(u, out _, out _)) throw new UsageException($"--urls: '{u}' is not an http:// or https:// URL");
    });

    private static string[] ParseOpsUrls(string s) => SplitUrls("--ops-urls", s, u =>
    {
        try
        {
            OpsOptions.PortOf(u, "--ops-urls");
        }
        catch (ArgumentException e)
        {
            throw new UsageException(e.Message);
        }
    });

    /// <summary>A ';'-separated list of listen addresses, each checked by <paramref name="check"/>.</summary>
    private static string[] SplitUrls(string option, string s, Action<string> check)
    {
        var urls = s.Split(';', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        if (urls.Length == 0) throw new UsageException($"{option} needs at least one URL");
        foreach (var u in urls) check(u);
        return urls;
    }
}
