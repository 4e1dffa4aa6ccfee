using System.Globalization;
using System.Text.Json;
using Spectre.Console;

namespace MoeServer.Ops;

/// <summary>
/// moectl: <c>[--endpoint URL] [--token T] [--json] VERB...</c> against a node's ops surface. Tables for people,
/// <c>--json</c> (the server's answer, indented) for scripts. Exit codes: 0 done, 2 usage, 3 unreachable, 4 token
/// refused, 5 the cluster refused or does not know what was asked for.
/// </summary>
public static class OpsCli
{
    public const string DefaultEndpoint = "http://127.0.0.1:8000";

    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    private static readonly (string Verb, string Help)[] Verbs =
    [
        ("health", "this node: role, phase, readiness, checkpoint fingerprint"),
        ("cluster show", "members: address, status, roles, reachability, leader"),
        ("experts placement", "which node hosts each expert, resident or not, pinned or not"),
        ("experts cache", "per expert node: budget, resident, hit rate, loads, evictions, bytes, stall"),
        ("experts pin L.E | unpin L.E | evict L.E", "keep an expert resident, release it, or free its weights now"),
        ("experts stats", "tokens routed per expert and layer (all gateways), as a heat table"),
        ("experts disable L.E | enable L.E", "route no new request to the expert, cluster-wide (or again)"),
        ("cluster leave ADDR | down ADDR | join ADDR", "a member leaves gracefully, is marked down, or this node joins ADDR"),
        ("cluster down-unreachable", "mark every unreachable member down"),
        ("sharding regions", "the nodes hosting a region of the expert shards"),
        ("sharding region-stats | shard-stats", "per region: shards and entities; per shard: entities"),
        ("sharding locate L.E", "the shard and node of an expert entity"),
        ("cluster tail", "membership and reachability events as they happen, until Ctrl+C"),
        ("actor hierarchy [--depth N] [--node ADDR]", "the actor tree of a node (/user and /system/sharding)"),
        ("log peek [--level warn] [--count N]", "the node's latest log lines at or above a level"),
        ("requests list", "requests running or waiting on the gateway"),
        ("requests cancel ID", "end a request now (finish reason cancelled)"),
    ];

    public static async Task<int> RunAsync(string[] args, TextWriter stdout, TextWriter stderr, CancellationToken cancel = default)
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(stdout),
            Ansi = stdout == Console.Out && !Console.IsOutputRedirected ? AnsiSupport.Detect : AnsiSupport.No,
            ColorSystem = stdout == Console.Out && !Console.IsOutputRedirected ? ColorSystemSupport.Detect : ColorSystemSupport.NoColors,
        });
        if (stdout != Console.Out || Console.IsOutputRedirected) console.Profile.Width = 160; // no terminal to size tables to
        try
        {
            var (endpoint, token, json, verb) = Parse(args);
            if (verb.Count == 0 || verb[0] is "help" or "--help" or "-h")
            {
                Usage(stdout);
                return verb.Count == 0 ? OpsCliException.Usage : 0;
            }
            using var client = new OpsClient(endpoint, token, TimeSpan.FromSeconds(60));
            if (verb is ["cluster", "tail", ..])
            {
                // Streams until Ctrl+C (or the caller's token): one line per membership or reachability event.
                await client.StreamAsync("/ops/cluster/events", e =>
                {
                    if (json) stdout.WriteLine(JsonSerializer.Serialize(e));
                    else console.MarkupLine($"[grey]{Markup.Escape(S(e, "time"))}[/] [bold]{Markup.Escape(S(e, "event"))}[/] {Markup.Escape(S(e, "address"))} " +
                                            $"{Markup.Escape(S(e, "status"))} [grey]{Markup.Escape(string.Join(",", e.GetProperty("roles").EnumerateArray().Select(r => r.GetString())))}[/]");
                    stdout.Flush();
                }, cancel).ConfigureAwait(false);
                return 0;
            }
            var (answer, render) = await DispatchAsync(client, verb).ConfigureAwait(false);
            if (json) await stdout.WriteLineAsync(JsonSerializer.Serialize(answer, Indented)).ConfigureAwait(false);
            else render(console, answer);
            return 0;
        }
        catch (OpsCliException ex)
        {
            await stderr.WriteLineAsync($"moectl: {ex.Message}").ConfigureAwait(false);
            return ex.ExitCode;
        }
    }

    private static (Uri Endpoint, string? Token, bool Json, List<string> Verb) Parse(string[] args)
    {
        string endpoint = Environment.GetEnvironmentVariable("MOECTL_ENDPOINT") is { Length: > 0 } e ? e : DefaultEndpoint;
        string? token = Environment.GetEnvironmentVariable("MOE_OPS_TOKEN");
        bool json = false;
        var verb = new List<string>();
        for (int i = 0; i < args.Length; i++)
        {
            string a = args[i];
            switch (a)
            {
                case "--endpoint":
                    endpoint = i + 1 < args.Length ? args[++i] : throw new OpsCliException("--endpoint needs a URL", OpsCliException.Usage);
                    break;
                case "--token":
                    token = i + 1 < args.Length ? args[++i] : throw new OpsCliException("--token needs a value", OpsCliException.Usage);
                    break;
                case "--json":
                    json = true;
                    break;
                case "--level" or "--depth" or "--count" or "--node":
                    // verb options travel with the verb
                    verb.Add(a);
                    verb.Add(i + 1 < args.Length ? args[++i] : throw new OpsCliException($"{a} needs a value", OpsCliException.Usage));
                    break;
                default:
                    if (a.StartsWith("--", StringComparison.Ordinal) && a != "--help")
                        throw new OpsCliException($"unknown option {a} (options: --endpoint URL, --token T, --json; verbs take --level, --count, --depth, --node)", OpsCliException.Usage);
                    verb.Add(a);
                    break;
            }
        }
        if (!Uri.TryCreate(endpoint, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https"))
            throw new OpsCliException($"--endpoint '{endpoint}' is not an http(s) URL", OpsCliException.Usage);
        return (uri, token, json, verb);
    }

    private static void Usage(TextWriter w)
    {
        w.WriteLine("usage: moectl [--endpoint URL] [--token T] [--json] VERB...");
        w.WriteLine($"  --endpoint  a node's HTTP address (default {DefaultEndpoint}, or MOECTL_ENDPOINT)");
        w.WriteLine("  --token     the ops token (or MOE_OPS_TOKEN); without one the node serves loopback callers only");
        w.WriteLine("  --json      print the answer as JSON");
        w.WriteLine("verbs:");
        foreach (var (verb, help) in Verbs) w.WriteLine($"  {verb,-42} {help}");
    }

    private static async Task<(JsonElement Answer, Action<IAnsiConsole, JsonElement> Render)> DispatchAsync(OpsClient c, List<string> v)
    {
        string Arg(int i, string what) => v.Count > i ? v[i] : throw new OpsCliException($"{string.Join(' ', v)}: {what} is missing", OpsCliException.Usage);
        switch (v[0], v.Count > 1 ? v[1] : "")
        {
            case ("health", _):
                return (await c.GetAsync("/ops/health").ConfigureAwait(false), RenderHealth);
            case ("cluster", "show"):
                return (await c.GetAsync("/ops/cluster").ConfigureAwait(false), RenderCluster);
            case ("experts", "placement"):
                return (await c.GetAsync("/ops/experts/placement").ConfigureAwait(false), RenderPlacement);
            case ("experts", "cache"):
                return (await c.GetAsync("/ops/experts/cache").ConfigureAwait(false), RenderCache);
            case ("experts", "pin" or "unpin" or "evict" or "disable" or "enable"):
                return (await c.PostAsync($"/ops/experts/{Uri.EscapeDataString(Arg(2, "the expert (layer.expert)"))}/{v[1]}").ConfigureAwait(false), RenderDone);
            case ("experts", "stats"):
                return (await c.GetAsync("/ops/experts/stats").ConfigureAwait(false), RenderStats);
            case ("cluster", "leave" or "down" or "join"):
                return (await c.PostAsync($"/ops/cluster/{v[1]}?address={Uri.EscapeDataString(Arg(2, "the member address (akka.tcp://moe@HOST:PORT)"))}").ConfigureAwait(false), RenderDone);
            case ("cluster", "down-unreachable"):
                return (await c.PostAsync("/ops/cluster/down-unreachable").ConfigureAwait(false), RenderDone);
            case ("sharding", "regions"):
                return (await c.GetAsync("/ops/sharding/regions").ConfigureAwait(false), RenderRegions);
            case ("sharding", "region-stats"):
                return (await c.GetAsync("/ops/sharding/stats").ConfigureAwait(false), RenderRegionStats);
            case ("sharding", "shard-stats"):
                return (await c.GetAsync("/ops/sharding/stats").ConfigureAwait(false), RenderShardStats);
            case ("sharding", "locate"):
                return (await c.GetAsync($"/ops/sharding/locate/{Uri.EscapeDataString(Arg(2, "the expert entity (layer.expert)"))}").ConfigureAwait(false), RenderLocate);
            case ("actor", "hierarchy"):
                return (await c.GetAsync($"/ops/actors?depth={Opt(v, "--depth") ?? "3"}" + (Opt(v, "--node") is { } n ? $"&node={Uri.EscapeDataString(n)}" : "")).ConfigureAwait(false), RenderTree);
            case ("log", "peek"):
                return (await c.GetAsync($"/ops/log?level={Uri.EscapeDataString(Opt(v, "--level") ?? "info")}&count={Opt(v, "--count") ?? "50"}").ConfigureAwait(false), RenderLog);
            case ("requests", "list"):
                return (await c.GetAsync("/ops/requests").ConfigureAwait(false), RenderRequests);
            case ("requests", "cancel"):
                return (await c.PostAsync($"/ops/requests/{Uri.EscapeDataString(Arg(2, "the request id"))}/cancel").ConfigureAwait(false), RenderDone);
            default:
                throw new OpsCliException($"unknown verb '{string.Join(' ', v)}'; verbs: {string.Join(", ", Verbs.Select(x => x.Verb))}", OpsCliException.Usage);
        }
    }

    /// <summary>host:port of an Akka address (the system name and protocol are the same on every node).</summary>
    private static string Node(string address) => address.Contains('@', StringComparison.Ordinal) ? address[(address.IndexOf('@', StringComparison.Ordinal) + 1)..] : address;

    private static string S(JsonElement e, string name) => e.TryGetProperty(name, out var p) && p.ValueKind != JsonValueKind.Null
        ? p.ValueKind == JsonValueKind.String ? p.GetString()! : p.ToString()
        : "";

    private static void RenderHealth(IAnsiConsole con, JsonElement a)
    {
        if (a.GetProperty("report") is { ValueKind: JsonValueKind.Object } r)
        {
            string phase = S(r, "phase");
            con.MarkupLine($"[bold]{Markup.Escape(S(r, "address"))}[/] role {Markup.Escape(S(r, "role"))}: " +
                           $"[{(phase == "Ready" ? "green" : "yellow")}]{Markup.Escape(phase)}[/] ({Markup.Escape(S(r, "detail"))})");
            con.MarkupLine($"checkpoint {Markup.Escape(S(r, "fingerprint"))}");
        }
        else
        {
            con.MarkupLine($"[red]{Markup.Escape(S(a, "error"))}[/]");
        }
    }

    private static void RenderCluster(IAnsiConsole con, JsonElement a)
    {
        var t = new Table().AddColumns("address", "status", "roles", "reachable", "");
        foreach (var m in a.GetProperty("members").EnumerateArray())
        {
            bool reachable = m.GetProperty("reachable").GetBoolean();
            string status = S(m, "status");
            t.AddRow(Markup.Escape(S(m, "address")), status == "Up" ? $"[green]{status}[/]" : $"[yellow]{Markup.Escape(status)}[/]",
                Markup.Escape(string.Join(",", m.GetProperty("roles").EnumerateArray().Select(r => r.GetString()))),
                reachable ? "yes" : "[red]no[/]",
                string.Join(" ", new[] { m.GetProperty("self").GetBoolean() ? "self" : "", m.GetProperty("leader").GetBoolean() ? "leader" : "" }.Where(x => x.Length > 0)));
        }
        con.Write(t);
    }

    private static void RenderPlacement(IAnsiConsole con, JsonElement a)
    {
        var t = new Table().AddColumns("expert", "node", "resident", "pinned");
        foreach (var p in a.EnumerateArray())
        {
            string error = S(p, "error");
            t.AddRow(S(p, "expert"), error.Length > 0 ? $"[red]{Markup.Escape(error)}[/]" : Markup.Escape(Node(S(p, "node"))),
                p.GetProperty("resident").GetBoolean() ? "[green]yes[/]" : "no", p.GetProperty("pinned").GetBoolean() ? "yes" : "");
        }
        con.Write(t);
    }

    private static void RenderCache(IAnsiConsole con, JsonElement a)
    {
        var t = new Table().AddColumns("node", "budget", "policy/tier", "resident", "hit rate", "uses", "loads demand/prefetch", "evictions", "MiB loaded", "stall s", "pinned");
        foreach (var n in a.EnumerateArray())
        {
            if (n.GetProperty("report") is not { ValueKind: JsonValueKind.Object } r || r.GetProperty("residency") is not { ValueKind: JsonValueKind.Object } c)
            {
                t.AddRow(Markup.Escape(Node(S(n, "address"))), $"[red]{Markup.Escape(S(n, "error"))}[/]", "", "", "", "", "", "", "", "", "");
                continue;
            }
            double hit = c.GetProperty("hitRate").GetDouble();
            t.AddRow(Markup.Escape(Node(S(n, "address"))), S(c, "budgetExperts"), $"{S(c, "policy")}/{S(c, "tier")}",
                c.GetProperty("resident").GetArrayLength().ToString(CultureInfo.InvariantCulture),
                $"[{(hit >= 0.5 ? "green" : "yellow")}]{hit:P1}[/]", S(c, "uses"), $"{S(c, "demandLoads")}/{S(c, "prefetchLoads")}", S(c, "evictions"),
                (c.GetProperty("bytesLoaded").GetDouble() / (1 << 20)).ToString("F1", CultureInfo.InvariantCulture),
                c.GetProperty("stallSeconds").GetDouble().ToString("F3", CultureInfo.InvariantCulture),
                string.Join(" ", c.GetProperty("pinned").EnumerateArray().Select(x => x.GetString())));
        }
        con.Write(t);
    }

    private static void RenderRequests(IAnsiConsole con, JsonElement a)
    {
        var t = new Table().AddColumns("request", "state", "prompt", "prefilled", "generated", "max tokens", "age s");
        foreach (var r in a.EnumerateArray())
            t.AddRow(Markup.Escape(S(r, "requestId")), S(r, "state"), S(r, "promptTokens"), S(r, "prefilled"), S(r, "generated"), S(r, "maxTokens"),
                r.GetProperty("ageSeconds").GetDouble().ToString("F1", CultureInfo.InvariantCulture));
        con.Write(t);
        if (a.GetArrayLength() == 0) con.MarkupLine("[grey]no requests[/]");
    }

    private static void RenderStats(IAnsiConsole con, JsonElement a)
    {
        var routed = a.GetProperty("routed").EnumerateArray().Select(l => l.EnumerateArray().Select(x => x.GetInt64()).ToArray()).ToArray();
        var disabled = a.GetProperty("disabled").EnumerateArray().Select(x => x.GetString()).ToHashSet();
        int experts = routed.Length == 0 ? 0 : routed[0].Length;
        var t = new Table().AddColumn("layer");
        for (int e = 0; e < experts; e++) t.AddColumn(new TableColumn(e.ToString(CultureInfo.InvariantCulture)).RightAligned());
        for (int l = 0; l < routed.Length; l++)
        {
            long total = Math.Max(1, routed[l].Sum());
            var cells = new List<string> { l.ToString(CultureInfo.InvariantCulture) };
            for (int e = 0; e < experts; e++)
            {
                double share = (double)routed[l][e] / total;
                string colour = share >= 2.0 / experts ? "red" : share >= 1.0 / experts ? "yellow" : share > 0 ? "green" : "grey";
                string cell = $"[{colour}]{routed[l][e]}[/]";
                cells.Add(disabled.Contains($"{l}.{e}") ? cell + " [grey](off)[/]" : cell);
            }
            t.AddRow(cells.ToArray());
        }
        con.Write(t);
        con.MarkupLine("[grey]tokens routed per expert (prefill and decode), all gateways; red: twice the even share or more[/]");
    }

    private static void RenderRegions(IAnsiConsole con, JsonElement a)
    {
        foreach (var r in a.GetProperty("regions").EnumerateArray()) con.WriteLine(r.GetString() ?? "");
    }

    private static void RenderRegionStats(IAnsiConsole con, JsonElement a)
    {
        var t = new Table().AddColumns("region", "shards", "entities", "failed shards");
        foreach (var r in a.EnumerateArray())
            t.AddRow(Markup.Escape(S(r, "region")), S(r, "shards"), S(r, "entities"), string.Join(" ", r.GetProperty("failed").EnumerateArray().Select(x => x.GetString())));
        con.Write(t);
    }

    private static void RenderShardStats(IAnsiConsole con, JsonElement a)
    {
        var t = new Table().AddColumns("region", "shard", "entities");
        foreach (var r in a.EnumerateArray())
            foreach (var shard in r.GetProperty("perShard").EnumerateObject())
                t.AddRow(Markup.Escape(Node(S(r, "region"))), shard.Name, shard.Value.ToString());
        con.Write(t);
    }

    private static void RenderLocate(IAnsiConsole con, JsonElement a) =>
        con.MarkupLine($"expert {Markup.Escape(S(a, "entity"))}: shard {Markup.Escape(S(a, "shard"))} on {Markup.Escape(S(a, "node"))}");

    /// <summary>A verb option's value (<c>--depth 2</c>), or null.</summary>
    private static string? Opt(List<string> verb, string name)
    {
        int i = verb.IndexOf(name);
        return i >= 0 && i + 1 < verb.Count ? verb[i + 1] : null;
    }

    private static void RenderTree(IAnsiConsole con, JsonElement a)
    {
        var root = new Tree(Markup.Escape(S(a, "address")));
        var nodes = new Dictionary<string, IHasTreeNodes>(StringComparer.Ordinal);
        foreach (string path in a.GetProperty("paths").EnumerateArray().Select(p => p.GetString()!).Order(StringComparer.Ordinal))
        {
            int cut = path.LastIndexOf('/');
            string parent = cut > 0 ? path[..cut] : "";
            IHasTreeNodes under = nodes.TryGetValue(parent, out var p) ? p : root;
            nodes[path] = under.AddNode(Markup.Escape(nodes.ContainsKey(parent) ? path[(cut + 1)..] : path));
        }
        con.Write(root);
    }

    private static void RenderLog(IAnsiConsole con, JsonElement a)
    {
        foreach (var l in a.EnumerateArray())
        {
            string level = S(l, "level");
            string colour = level switch { "Critical" or "Error" => "red", "Warning" => "yellow", _ => "grey" };
            con.MarkupLine($"[grey]{Markup.Escape(S(l, "time"))}[/] [{colour}]{Markup.Escape(level)}[/] [blue]{Markup.Escape(S(l, "category"))}[/] {Markup.Escape(S(l, "message"))}");
        }
        if (a.GetArrayLength() == 0) con.MarkupLine("[grey]no log lines at that level[/]");
    }

    private static void RenderDone(IAnsiConsole con, JsonElement a) => con.MarkupLine($"[green]{Markup.Escape(S(a, "message"))}[/]");
}
