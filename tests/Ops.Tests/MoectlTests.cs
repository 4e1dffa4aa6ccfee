using System.Net;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using MoeServer.Actors.Generation;
using MoeServer.Gateway.Ops;
using MoeServer.Gateway.Tests;
using MoeServer.Gateway.Tests.Support;
using MoeServer.Kernels.Generation;
using MoeServer.Kernels.Model;
using MoeServer.Kernels.Sampling;

namespace MoeServer.Ops.Tests;

/// <summary>moectl against a real 3-node cluster: every verb's JSON is checked against the nodes' real state.</summary>
[Collection(OpsClusterCollection.Name)]
public sealed class MoectlTests(OpsCluster cluster)
{
    private static JsonElement Json(string text) => JsonDocument.Parse(text).RootElement.Clone();

    [Fact]
    public async Task Health_reports_the_node_it_is_pointed_at()
    {
        var (exit, output, err) = await OpsCluster.RunAsync(cluster.Gateway, "--json", "health");
        Assert.True(exit == 0, err);
        var report = Json(output).GetProperty("report");
        Assert.Equal(cluster.Gateway.Runtime.Status.Address, report.GetProperty("address").GetString());
        Assert.Equal("gateway", report.GetProperty("role").GetString());
        Assert.Equal("Ready", report.GetProperty("phase").GetString());
        Assert.Equal(cluster.Gateway.Runtime.Status.Fingerprint, report.GetProperty("fingerprint").GetString());

        (exit, output, _) = await OpsCluster.RunAsync(cluster.Expert1, "health");
        Assert.Equal(0, exit);
        Assert.Contains("role expert", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Cluster_show_lists_the_three_members_with_their_roles_and_the_leader()
    {
        var (exit, output, err) = await OpsCluster.RunAsync(cluster.Gateway, "--json", "cluster", "show");
        Assert.True(exit == 0, err);
        var view = Json(output);
        var members = view.GetProperty("members").EnumerateArray().ToList();
        Assert.Equal(3, members.Count);
        var byAddress = members.ToDictionary(m => m.GetProperty("address").GetString()!);
        Assert.Contains("gateway", byAddress[cluster.Gateway.Runtime.Status.Address].GetProperty("roles").EnumerateArray().Select(r => r.GetString()));
        foreach (var e in cluster.ExpertNodes)
        {
            var m = byAddress[e.Runtime.Status.Address];
            Assert.Contains("expert", m.GetProperty("roles").EnumerateArray().Select(r => r.GetString()));
            Assert.Equal("Up", m.GetProperty("status").GetString());
            Assert.True(m.GetProperty("reachable").GetBoolean());
        }
        Assert.Single(members, m => m.GetProperty("self").GetBoolean());
        Assert.Single(members, m => m.GetProperty("leader").GetBoolean());

        (exit, output, _) = await OpsCluster.RunAsync(cluster.Gateway, "cluster", "show");
        Assert.Equal(0, exit);
        Assert.Contains(cluster.Expert2.Runtime.Status.Address, output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Experts_cache_reports_each_expert_nodes_budget_and_counters()
    {
        await OpsCluster.GenerateAsync(cluster.Gateway);
        var (exit, output, err) = await OpsCluster.RunAsync(cluster.Gateway, "--json", "experts", "cache");
        Assert.True(exit == 0, err);
        var nodes = Json(output).EnumerateArray().ToDictionary(n => n.GetProperty("address").GetString()!);
        Assert.Equal(2, nodes.Count); // expert nodes only
        long uses = 0;
        foreach (var e in cluster.ExpertNodes)
        {
            var live = e.Runtime.ExpertResidency!;
            var c = nodes[e.Runtime.Status.Address].GetProperty("report").GetProperty("residency");
            Assert.Equal(3, c.GetProperty("budgetExperts").GetInt32());
            Assert.Equal("lru", c.GetProperty("policy").GetString());
            Assert.Equal(live.Resident().Select(x => x.EntityId), c.GetProperty("resident").EnumerateArray().Select(x => x.GetString()));
            Assert.Equal(live.Stats().Uses, c.GetProperty("uses").GetInt64());
            uses += c.GetProperty("uses").GetInt64();
        }
        Assert.True(uses > 0, "the generation used no experts?");
        (exit, output, _) = await OpsCluster.RunAsync(cluster.Gateway, "experts", "cache");
        Assert.Equal(0, exit);
        Assert.Contains("lru", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Experts_placement_names_the_node_that_hosts_each_expert()
    {
        var (exit, output, err) = await OpsCluster.RunAsync(cluster.Gateway, "--json", "experts", "placement");
        Assert.True(exit == 0, err);
        var rows = Json(output).EnumerateArray().ToList();
        var cfg = cluster.Gateway.Engine.Config;
        Assert.Equal(Enumerable.Range(0, cfg.NumLayers).Count(cfg.IsSparseLayer) * cfg.NumExperts, rows.Count);
        foreach (var row in rows)
        {
            var id = ExpertId.Parse(row.GetProperty("expert").GetString()!);
            var host = cluster.ExpertNodes.Single(n => n.Runtime.Status.Address == row.GetProperty("node").GetString());
            Assert.True(host.Runtime.ExpertResidency!.Hosts(id), $"{id} is not hosted on {host.Runtime.Status.Address}");
            Assert.Equal(host.Runtime.ExpertResidency.IsResident(id), row.GetProperty("resident").GetBoolean());
        }
    }

    [Fact]
    public async Task Pin_keeps_an_expert_resident_evict_is_refused_while_pinned_and_frees_it_after_unpin()
    {
        const string expert = "1.3";
        var id = ExpertId.Parse(expert);
        var (exit, output, err) = await OpsCluster.RunAsync(cluster.Gateway, "--json", "experts", "pin", expert);
        Assert.True(exit == 0, err);
        Assert.True(Json(output).GetProperty("ok").GetBoolean());
        var host = cluster.ExpertNodes.Single(n => n.Runtime.ExpertResidency!.Hosts(id)).Runtime.ExpertResidency!;
        Assert.Contains(id, host.Pinned());
        Assert.True(host.IsResident(id));
        await OpsCluster.GenerateAsync(cluster.Gateway, 12); // other experts come and go; the pinned one stays
        Assert.True(host.IsResident(id));

        (exit, _, err) = await OpsCluster.RunAsync(cluster.Gateway, "experts", "evict", expert);
        Assert.Equal(OpsCliException.Refused, exit);
        Assert.Contains("not evicted", err, StringComparison.Ordinal);

        (exit, _, err) = await OpsCluster.RunAsync(cluster.Gateway, "experts", "unpin", expert);
        Assert.True(exit == 0, err);
        Assert.DoesNotContain(id, host.Pinned());
        (exit, output, err) = await OpsCluster.RunAsync(cluster.Gateway, "experts", "evict", expert);
        Assert.True(exit == 0, err);
        Assert.Contains("evicted", output, StringComparison.Ordinal);
        Assert.False(host.IsResident(id));
    }

    [Fact]
    public async Task Unknown_experts_and_verbs_are_clear_errors()
    {
        var (exit, _, err) = await OpsCluster.RunAsync(cluster.Gateway, "experts", "pin", "9.0");
        Assert.Equal(OpsCliException.Refused, exit);
        Assert.Contains("does not exist", err, StringComparison.Ordinal);
        (exit, _, err) = await OpsCluster.RunAsync(cluster.Gateway, "experts", "pin", "seven");
        Assert.Equal(OpsCliException.Refused, exit);
        Assert.Contains("layer", err, StringComparison.Ordinal);
        (exit, _, err) = await OpsCluster.RunAsync(cluster.Gateway, "cluster", "explode");
        Assert.Equal(OpsCliException.Usage, exit);
        Assert.Contains("unknown verb", err, StringComparison.Ordinal);
        (exit, _, err) = await OpsCluster.RunAsync(cluster.Expert1, "requests", "list");
        Assert.Equal(OpsCliException.Refused, exit);
        Assert.Contains("runs no gateway", err, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Requests_list_shows_a_running_generation_and_cancel_ends_it()
    {
        var engine = cluster.Gateway.Engine;
        var noEos = engine.Config.EosTokenIds.ToDictionary(e => e, _ => -100f);
        var stream = await engine.SubmitAsync(new GenerationRequest("ops-long", [5, 6, 7],
            SamplingParams.Greedy with { MaxTokens = engine.Config.MaxPositionEmbeddings - 8, LogitBias = noEos }));
        JsonElement row = default;
        for (int i = 0; i < 100 && row.ValueKind == JsonValueKind.Undefined; i++)
        {
            var (exit, output, err) = await OpsCluster.RunAsync(cluster.Gateway, "--json", "requests", "list");
            Assert.True(exit == 0, err);
            row = Json(output).EnumerateArray().FirstOrDefault(r => r.GetProperty("requestId").GetString() == "ops-long");
        }
        Assert.Equal(JsonValueKind.Object, row.ValueKind);
        Assert.Equal(3, row.GetProperty("promptTokens").GetInt32());
        Assert.Contains(row.GetProperty("state").GetString(), new[] { "waiting", "prefilling", "decoding", "paused" });

        var (code, said, e2) = await OpsCluster.RunAsync(cluster.Gateway, "requests", "cancel", "ops-long");
        Assert.True(code == 0, e2);
        Assert.Contains("cancelled", said, StringComparison.Ordinal);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var (_, final, tokens) = await stream.CollectAsync(timeout.Token);
        Assert.Equal(FinishReason.Cancelled, final.FinishReason);
        Assert.True(tokens.Count < engine.Config.MaxPositionEmbeddings - 8);

        (code, _, e2) = await OpsCluster.RunAsync(cluster.Gateway, "requests", "cancel", "ops-long");
        Assert.Equal(OpsCliException.Refused, code);
        Assert.Contains("no request ops-long", e2, StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_unreachable_endpoint_is_a_clear_error()
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int exit = await OpsCli.RunAsync(["--endpoint", "http://127.0.0.1:1", "health"], stdout, stderr);
        Assert.Equal(OpsCliException.Unreachable, exit);
        Assert.Contains("cannot reach http://127.0.0.1:1", stderr.ToString(), StringComparison.Ordinal);
    }
}

/// <summary>Who may use the ops surface.</summary>
public sealed class OpsAccessTests
{
    [Fact]
    public async Task With_a_token_configured_calls_without_it_or_with_another_are_refused()
    {
        await using var node = await GatewayServer.StartAsync(TinyModel.Dir, """moe.ops.token = "s3cret-ops" """);
        var (exit, _, err) = await OpsCluster.RunAsync(node, "health");
        Assert.Equal(OpsCliException.Unauthorized, exit);
        Assert.Contains("needs a token", err, StringComparison.Ordinal);
        (exit, _, err) = await OpsCluster.RunAsync(node, "--token", "wrong", "health");
        Assert.Equal(OpsCliException.Unauthorized, exit);
        Assert.Contains("refused", err, StringComparison.Ordinal);
        (exit, _, err) = await OpsCluster.RunAsync(node, "--token", "s3cret-ops", "health");
        Assert.True(exit == 0, err);
        // The OpenAI API is not behind the ops token.
        Assert.Equal(HttpStatusCode.OK, (await node.Http.GetAsync("/v1/models")).StatusCode);
    }

    [Fact]
    public void Without_a_token_only_loopback_callers_are_served()
    {
        var none = new OpsOptions();
        Assert.Null(OpsAccess.Refusal(none, "", IPAddress.Loopback));
        Assert.Null(OpsAccess.Refusal(none, "", IPAddress.IPv6Loopback));
        var refused = OpsAccess.Refusal(none, "", IPAddress.Parse("10.1.2.3"));
        Assert.NotNull(refused);
        Assert.Equal(403, refused.Value.Status);
        Assert.Contains("loopback", refused.Value.Message, StringComparison.Ordinal);
        var withToken = new OpsOptions { Token = "t" };
        Assert.Null(OpsAccess.Refusal(withToken, "Bearer t", IPAddress.Parse("10.1.2.3")));
        Assert.Equal(401, OpsAccess.Refusal(withToken, "Bearer x", IPAddress.Loopback)!.Value.Status);
    }
}

/// <summary>Routing statistics, cluster-wide expert switches and the sharding verbs, on the shared cluster.</summary>
[Collection(OpsClusterCollection.Name)]
public sealed class MoectlExpertsAndShardingTests(OpsCluster cluster)
{
    private static JsonElement Json(string text) => JsonDocument.Parse(text).RootElement.Clone();

    [Fact]
    public async Task Experts_stats_are_the_tokens_the_gateway_routed_per_layer_and_expert()
    {
        await OpsCluster.GenerateAsync(cluster.Gateway, 5);
        var (exit, output, err) = await OpsCluster.RunAsync(cluster.Gateway, "--json", "experts", "stats");
        Assert.True(exit == 0, err);
        var routed = Json(output).GetProperty("routed").EnumerateArray().Select(l => l.EnumerateArray().Select(x => x.GetInt64()).ToArray()).ToArray();
        var g = cluster.Gateway.Engine.Gauges;
        for (int l = 0; l < g.NumLayers; l++)
            for (int e = 0; e < g.NumExperts; e++)
                Assert.Equal(g.RoutedTokens(l, e), routed[l][e]);
        Assert.True(routed.Sum(l => l.Sum()) > 0);
        (exit, output, _) = await OpsCluster.RunAsync(cluster.Gateway, "experts", "stats");
        Assert.Equal(0, exit);
        Assert.Contains("tokens routed per expert", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Disabling_an_expert_keeps_new_requests_off_it_until_it_is_enabled_again()
    {
        var engine = cluster.Gateway.Engine;
        int[] prompt = [11, 12, 13, 14];
        async Task<HashSet<int>> Layer0ExpertsAsync()
        {
            var stream = await engine.SubmitAsync(new GenerationRequest($"disable-{Guid.NewGuid():N}", prompt, SamplingParams.Greedy with { MaxTokens = 6 }));
            var used = new HashSet<int>();
            await foreach (var chunk in stream)
                if (chunk.ExpertsByLayer is { } byLayer) used.UnionWith(byLayer[0]);
            return used;
        }
        var before = await Layer0ExpertsAsync();
        int victim = before.Min();
        string expert = $"0.{victim}";
        try
        {
            var (exit, output, err) = await OpsCluster.RunAsync(cluster.Gateway, "experts", "disable", expert);
            Assert.True(exit == 0, err);
            Assert.Contains("disabled", output, StringComparison.Ordinal);
            Assert.Contains(new ExpertId(0, victim), engine.DisabledExperts);
            var after = await Layer0ExpertsAsync();
            Assert.DoesNotContain(victim, after);
            (exit, output, _) = await OpsCluster.RunAsync(cluster.Gateway, "--json", "experts", "stats");
            Assert.Contains(expert, Json(output).GetProperty("disabled").EnumerateArray().Select(x => x.GetString()));
        }
        finally
        {
            var (exit, _, err) = await OpsCluster.RunAsync(cluster.Gateway, "experts", "enable", expert);
            Assert.True(exit == 0, err);
        }
        Assert.Empty(engine.DisabledExperts);
        Assert.Equal(before, await Layer0ExpertsAsync());
    }

    [Fact]
    public async Task Disabling_so_many_experts_that_a_token_has_too_few_left_is_refused()
    {
        var cfg = cluster.Gateway.Engine.Config;
        var done = new List<string>();
        try
        {
            int exit = 0;
            string err = "";
            for (int e = 0; e < cfg.NumExperts && exit == 0; e++)
            {
                string id = $"{cfg.NumLayers - 1}.{e}";
                (exit, _, err) = await OpsCluster.RunAsync(cluster.Gateway, "experts", "disable", id);
                if (exit == 0) done.Add(id);
            }
            Assert.Equal(OpsCliException.Refused, exit);
            Assert.Contains("fewer than", err, StringComparison.Ordinal);
            Assert.Equal(cfg.NumExperts - cfg.NumExpertsPerToken, done.Count);
        }
        finally
        {
            foreach (var e in done) await OpsCluster.RunAsync(cluster.Gateway, "experts", "enable", e);
        }
        Assert.Empty(cluster.Gateway.Engine.DisabledExperts);
    }

    [Fact]
    public async Task Sharding_verbs_report_the_expert_regions_their_entities_and_where_one_lives()
    {
        var (exit, output, err) = await OpsCluster.RunAsync(cluster.Gateway, "--json", "sharding", "regions");
        Assert.True(exit == 0, err);
        var regions = Json(output).GetProperty("regions").EnumerateArray().Select(r => r.GetString()!).ToHashSet();
        Assert.Equal(cluster.ExpertNodes.Select(n => n.Runtime.Status.Address).ToHashSet(), regions);

        (exit, output, err) = await OpsCluster.RunAsync(cluster.Gateway, "--json", "sharding", "shard-stats");
        Assert.True(exit == 0, err);
        var stats = Json(output).EnumerateArray().ToList();
        var cfg = cluster.Gateway.Engine.Config;
        Assert.Equal(Enumerable.Range(0, cfg.NumLayers).Count(cfg.IsSparseLayer) * cfg.NumExperts, stats.Sum(r => r.GetProperty("entities").GetInt32()));
        foreach (var r in stats)
        {
            var node = cluster.ExpertNodes.Single(n => n.Runtime.Status.Address == r.GetProperty("region").GetString());
            int hosted = ExpertIdsHostedBy(node).Count;
            Assert.Equal(hosted, r.GetProperty("entities").GetInt32());
        }
        (exit, output, _) = await OpsCluster.RunAsync(cluster.Gateway, "sharding", "region-stats");
        Assert.Equal(0, exit);

        var probe = new ExpertId(cfg.NumLayers - 1, cfg.NumExperts - 1);
        (exit, output, err) = await OpsCluster.RunAsync(cluster.Gateway, "--json", "sharding", "locate", probe.EntityId);
        Assert.True(exit == 0, err);
        var located = Json(output);
        var host = cluster.ExpertNodes.Single(n => n.Runtime.ExpertResidency!.Hosts(probe));
        Assert.Equal(host.Runtime.Status.Address, located.GetProperty("node").GetString());
        Assert.False(string.IsNullOrEmpty(located.GetProperty("shard").GetString()));
    }

    private static List<ExpertId> ExpertIdsHostedBy(GatewayServer node)
    {
        var cfg = node.Runtime.Config;
        return Enumerable.Range(0, cfg.NumLayers).SelectMany(l => Enumerable.Range(0, cfg.NumExperts).Select(e => new ExpertId(l, e)))
            .Where(node.Runtime.ExpertResidency!.Hosts).ToList();
    }

    [Fact]
    public async Task Cluster_actions_on_unknown_members_are_refused_and_down_unreachable_says_when_nothing_is()
    {
        var (exit, _, err) = await OpsCluster.RunAsync(cluster.Gateway, "cluster", "leave", "akka.tcp://moe@127.0.0.1:1");
        Assert.Equal(OpsCliException.Refused, exit);
        Assert.Contains("is not a member", err, StringComparison.Ordinal);
        (exit, _, err) = await OpsCluster.RunAsync(cluster.Gateway, "cluster", "down", "not an address");
        Assert.Equal(OpsCliException.Refused, exit);
        Assert.Contains("not an Akka address", err, StringComparison.Ordinal);
        (exit, var output, err) = await OpsCluster.RunAsync(cluster.Gateway, "cluster", "down-unreachable");
        Assert.True(exit == 0, err);
        Assert.Contains("no member is unreachable", output, StringComparison.Ordinal);
    }
}

/// <summary>What a node says and what runs on it.</summary>
[Collection(OpsClusterCollection.Name)]
public sealed class MoectlNodeTests(OpsCluster cluster)
{
    [Fact]
    public async Task Log_peek_shows_the_nodes_latest_lines_at_or_above_the_level()
    {
        var logger = cluster.Expert1.Services.GetRequiredService<Microsoft.Extensions.Logging.ILoggerFactory>().CreateLogger("OpsTest");
        string marker = $"peek-marker-{Guid.NewGuid():N}";
        Microsoft.Extensions.Logging.LoggerExtensions.LogWarning(logger, "{Marker} something an operator should see", marker);
        var (exit, output, err) = await OpsCluster.RunAsync(cluster.Expert1, "--json", "log", "peek", "--level", "warn", "--count", "500");
        Assert.True(exit == 0, err);
        var line = JsonDocument.Parse(output).RootElement.EnumerateArray().Single(l => l.GetProperty("message").GetString()!.Contains(marker, StringComparison.Ordinal));
        Assert.Equal("Warning", line.GetProperty("level").GetString());
        Assert.Equal("OpsTest", line.GetProperty("category").GetString());
        (exit, output, _) = await OpsCluster.RunAsync(cluster.Expert1, "log", "peek", "--level", "error", "--count", "500");
        Assert.Equal(0, exit);
        Assert.DoesNotContain(marker, output, StringComparison.Ordinal);
        (exit, _, err) = await OpsCluster.RunAsync(cluster.Expert1, "log", "peek", "--level", "loud");
        Assert.Equal(OpsCliException.Refused, exit);
        Assert.Contains("unknown log level", err, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Actor_hierarchy_shows_the_nodes_agents_and_expert_shards()
    {
        // A node hosting expert entities (shards may all sit on one expert node until a rebalance).
        var cfg = cluster.Gateway.Engine.Config;
        var node = cluster.ExpertNodes.First(n => Enumerable.Range(0, cfg.NumExperts).Any(e => n.Runtime.ExpertResidency!.Hosts(new ExpertId(0, e))
                                                                                          || n.Runtime.ExpertResidency.Hosts(new ExpertId(1, e))));
        var (exit, output, err) = await OpsCluster.RunAsync(cluster.Gateway, "--json", "actor", "hierarchy", "--depth", "4",
            "--node", node.Runtime.Status.Address);
        Assert.True(exit == 0, err);
        var tree = JsonDocument.Parse(output).RootElement;
        Assert.Equal(node.Runtime.Status.Address, tree.GetProperty("address").GetString());
        var paths = tree.GetProperty("paths").EnumerateArray().Select(p => p.GetString()!).ToList();
        Assert.Contains("/user/ops-agent", paths);
        Assert.Contains("/user/expert-residency", paths);
        Assert.Contains(paths, p => p.StartsWith("/system/sharding/experts/", StringComparison.Ordinal));
        (exit, output, _) = await OpsCluster.RunAsync(cluster.Gateway, "actor", "hierarchy", "--depth", "1");
        Assert.Equal(0, exit);
        Assert.Contains("ops-agent", output, StringComparison.Ordinal);
        Assert.Contains("scheduler", output, StringComparison.Ordinal); // the gateway's router actor
    }
}

/// <summary>Membership changes get their own cluster (a class fixture is per class; they take nodes away).</summary>
public sealed class MoectlMembershipTests(OpsCluster cluster) : IClassFixture<OpsCluster>
{
    [Fact]
    public async Task Cluster_leave_of_an_expert_node_moves_its_shards_and_generation_keeps_working()
    {
        string leaving = cluster.Expert2.Runtime.Status.Address;
        using var stopTail = new CancellationTokenSource();
        var tailText = new StringWriter();
        var tailOut = TextWriter.Synchronized(tailText); // written by the tail, read here
        string[] TailSoFar()
        {
            lock (tailOut) return tailText.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        }
        var tail = OpsCli.RunAsync(["--endpoint", cluster.Gateway.BaseAddress.ToString(), "--json", "cluster", "tail"], tailOut, new StringWriter(), stopTail.Token);
        // The tail starts with the current members, as events; wait for them before changing anything.
        await OpsCluster.EventuallyAsync(() => Task.FromResult(TailSoFar().Length >= 3), "the tail's first three events");

        var (exit, output, err) = await OpsCluster.RunAsync(cluster.Gateway, "cluster", "leave", leaving);
        Assert.True(exit == 0, err);
        Assert.Contains("asked to leave", output, StringComparison.Ordinal);
        await OpsCluster.EventuallyAsync(async () =>
        {
            var (code, shown, _) = await OpsCluster.RunAsync(cluster.Gateway, "--json", "cluster", "show");
            return code == 0 && !JsonDocument.Parse(shown).RootElement.GetProperty("members").EnumerateArray().Any(m => m.GetProperty("address").GetString() == leaving);
        }, $"{leaving} leaving the cluster");

        await OpsCluster.GenerateAsync(cluster.Gateway);
        (exit, output, err) = await OpsCluster.RunAsync(cluster.Gateway, "--json", "sharding", "shard-stats");
        Assert.True(exit == 0, err);
        var cfg = cluster.Gateway.Engine.Config;
        var remaining = Assert.Single(JsonDocument.Parse(output).RootElement.EnumerateArray().ToList());
        Assert.Equal(cluster.Expert1.Runtime.Status.Address, remaining.GetProperty("region").GetString());
        Assert.Equal(cfg.NumLayers * cfg.NumExperts, remaining.GetProperty("entities").GetInt32());

        await stopTail.CancelAsync();
        Assert.Equal(0, await tail);
        var events = TailSoFar().Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal(3, events.Count(e => e.GetProperty("event").GetString() == "MemberUp")); // the members at the start
        Assert.Contains(events, e => e.GetProperty("event").GetString() == "MemberRemoved" && e.GetProperty("address").GetString() == leaving);
    }
}

public sealed class MoectlDownTests(OpsCluster cluster) : IClassFixture<OpsCluster>
{
    [Fact]
    public async Task Cluster_down_removes_an_expert_node_and_its_shards_move_to_the_other()
    {
        string downed = cluster.Expert1.Runtime.Status.Address;
        var (exit, output, err) = await OpsCluster.RunAsync(cluster.Gateway, "cluster", "down", downed);
        Assert.True(exit == 0, err);
        Assert.Contains("marked down", output, StringComparison.Ordinal);
        await OpsCluster.EventuallyAsync(async () =>
        {
            // While the coordinator reacts to the down it may not answer in time (a clear 504: exit 5).
            var (code, shown, _) = await OpsCluster.RunAsync(cluster.Gateway, "--json", "sharding", "regions");
            Assert.True(code is 0 or OpsCliException.Refused);
            return code == 0 && JsonDocument.Parse(shown).RootElement.GetProperty("regions").EnumerateArray().Select(r => r.GetString())
                .SequenceEqual([cluster.Expert2.Runtime.Status.Address]);
        }, "the downed node's region to go");
        await OpsCluster.GenerateAsync(cluster.Gateway);
    }
}

public sealed class MoectlJoinTests(OpsCluster cluster) : IClassFixture<OpsCluster>
{
    [Fact]
    public async Task A_node_started_without_auto_join_joins_the_cluster_it_is_told_to_once()
    {
        await using var extra = await GatewayServer.StartAsync(TinyModel.Dir, "moe.node.auto-join = off\n" + OpsCluster.ExpertHocon,
            Actors.Hosting.NodeRole.Expert, seed: null, waitReady: false);
        var (exit, output, err) = await OpsCluster.RunAsync(extra, "--json", "health");
        Assert.True(exit == 0, err);
        Assert.Contains("auto-join", JsonDocument.Parse(output).RootElement.GetProperty("report").GetProperty("detail").GetString(), StringComparison.Ordinal);

        string address = extra.Runtime.Status.Address;
        (exit, output, err) = await OpsCluster.RunAsync(extra, "cluster", "join", cluster.Gateway.Runtime.Status.Address);
        Assert.True(exit == 0, err);
        Assert.Contains("joining", output, StringComparison.Ordinal);
        await OpsCluster.EventuallyAsync(async () =>
        {
            var (code, shown, _) = await OpsCluster.RunAsync(cluster.Gateway, "--json", "cluster", "show");
            return code == 0 && JsonDocument.Parse(shown).RootElement.GetProperty("members").EnumerateArray()
                .Any(m => m.GetProperty("address").GetString() == address && m.GetProperty("status").GetString() == "Up");
        }, $"{address} to be Up in the gateway's cluster");
        await extra.WaitReadyAsync();

        (exit, _, err) = await OpsCluster.RunAsync(extra, "cluster", "join", cluster.Gateway.Runtime.Status.Address);
        Assert.Equal(OpsCliException.Refused, exit);
        Assert.Contains("already a member", err, StringComparison.Ordinal);
    }
}

/// <summary>The ops surface on a listener of its own (<c>moe.ops.urls</c>).</summary>
public sealed class OpsListenerTests
{
    private static int FreePort()
    {
        var l = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
        l.Start();
        int port = ((IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        return port;
    }

    private static async Task<string> ErrorCode(HttpResponseMessage r) =>
        JsonDocument.Parse(await r.Content.ReadAsStringAsync()).RootElement.GetProperty("error").GetProperty("code").GetString()!;

    [Fact]
    public async Task With_an_ops_listener_ops_is_served_on_its_port_only_and_that_port_serves_nothing_but_ops_health_and_metrics()
    {
        int port = FreePort();
        await using var node = await GatewayServer.StartAsync(TinyModel.Dir, $$"""moe.ops.urls = ["http://127.0.0.1:{{port}}"]""");
        Assert.NotEqual(port, node.BaseAddress.Port);
        using var ops = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}") };

        Assert.Equal(HttpStatusCode.OK, (await ops.GetAsync("/ops/health")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await ops.GetAsync("/health")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await ops.GetAsync("/metrics")).StatusCode);
        foreach (var path in new[] { "/v1/models", "/" })
        {
            using var r = await ops.GetAsync(path);
            Assert.Equal(HttpStatusCode.NotFound, r.StatusCode);
            Assert.Equal("not_on_ops_port", await ErrorCode(r));
        }
        using (var r = await ops.PostAsync("/v1/completions", new StringContent("""{"prompt":"x","max_tokens":1}""", Encoding.UTF8, "application/json")))
            Assert.Equal(HttpStatusCode.NotFound, r.StatusCode);

        // the API's port no longer serves /ops/*, and says where it is
        using (var r = await node.Http.GetAsync("/ops/health"))
        {
            Assert.Equal(HttpStatusCode.NotFound, r.StatusCode);
            Assert.Equal("ops_not_on_this_port", await ErrorCode(r));
            Assert.Contains(port.ToString(System.Globalization.CultureInfo.InvariantCulture), await r.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }
        Assert.Equal(HttpStatusCode.OK, (await node.Http.GetAsync("/v1/models")).StatusCode);
        await OpsCluster.GenerateAsync(node);

        // moectl talks to the ops listener; pointed at the API it is told where ops lives
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int exit = await OpsCli.RunAsync(["--endpoint", $"http://127.0.0.1:{port}", "--json", "health"], stdout, stderr);
        Assert.True(exit == 0, stderr.ToString());
        Assert.Equal(node.Runtime.Status.Address, JsonDocument.Parse(stdout.ToString()).RootElement.GetProperty("report").GetProperty("address").GetString());
        var (apiExit, _, apiErr) = await OpsCluster.RunAsync(node, "health");
        Assert.NotEqual(0, apiExit);
        Assert.Contains("ops surface listens on port", apiErr, StringComparison.Ordinal);
    }

    [Fact]
    public void Ops_urls_need_an_explicit_port_that_the_api_does_not_use()
    {
        Assert.Equal(9000, OpsOptions.PortOf("http://*:9000", "moe.ops.urls"));
        Assert.Equal(9001, OpsOptions.PortOf("http://[::1]:9001/", "moe.ops.urls"));
        Assert.Contains("explicit port", Assert.Throws<ArgumentException>(() => OpsOptions.PortOf("http://127.0.0.1", "moe.ops.urls")).Message, StringComparison.Ordinal);
        Assert.Contains("explicit port", Assert.Throws<ArgumentException>(() => OpsOptions.PortOf("http://[::1]", "moe.ops.urls")).Message, StringComparison.Ordinal);
        Assert.Contains("explicit port", Assert.Throws<ArgumentException>(() => OpsOptions.PortOf("http://127.0.0.1:0", "moe.ops.urls")).Message, StringComparison.Ordinal);
        Assert.Contains("not an http", Assert.Throws<ArgumentException>(() => OpsOptions.PortOf("ftp://127.0.0.1:21", "moe.ops.urls")).Message, StringComparison.Ordinal);
        var ops = new OpsOptions { Urls = ["http://127.0.0.1:9000"] };
        ops.CheckApiUrls(["http://127.0.0.1:8000", "http://127.0.0.1:0"]);
        Assert.Throws<ArgumentException>(() => ops.CheckApiUrls(["http://0.0.0.0:9000"]));
    }
}
