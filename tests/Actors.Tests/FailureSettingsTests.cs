using MoeServer.Actors.Hosting;

namespace MoeServer.Actors.Tests;

/// <summary>The failure-handling settings are checked against each other at start-up (hocon/base.hocon's timeline).</summary>
public class FailureSettingsTests
{
    [Fact]
    public void The_shipped_settings_load_with_failover_on_and_a_pause_fence_past_the_downing()
    {
        var s = MoeSettings.Load(NodeRole.Gateway);
        Assert.True(s.Experts.Failover.Local);
        Assert.Equal(TimeSpan.FromSeconds(3), s.Experts.AskTimeout);
        // 8 s acceptable pause + 15 s stable-after: the others have downed a node frozen that long.
        Assert.Equal(TimeSpan.FromSeconds(23), s.Node.PauseFence);
        Assert.Equal(TimeSpan.FromSeconds(43), Experts.ExpertOptions.ShardMoveTime(s.Hocon));
        Assert.True(s.Experts.RetryDeadline >= Experts.ExpertOptions.ShardMoveTime(s.Hocon));
    }

    [Fact]
    public void Without_failover_a_retry_deadline_shorter_than_the_shard_move_is_refused_naming_both()
    {
        var e = Assert.Throws<ArgumentException>(() => MoeSettings.Load(NodeRole.Gateway, """
            moe.experts { failover.local = off, retry-deadline = 40s }
            """));
        Assert.Contains("retry-deadline (40 s)", e.Message, StringComparison.Ordinal);
        Assert.Contains("(43 s:", e.Message, StringComparison.Ordinal);
        // The same deadline is fine when the gateway computes silent experts itself (the deadline is not used).
        Assert.Equal(TimeSpan.FromSeconds(40), MoeSettings.Load(NodeRole.Gateway, "moe.experts.retry-deadline = 40s").Experts.RetryDeadline);
        // A removal margin of its own counts instead of stable-after.
        var s = MoeSettings.Load(NodeRole.Gateway, """
            moe.experts { failover.local = off, retry-deadline = 40s }
            akka.cluster.down-removal-margin = 5s
            """);
        Assert.Equal(TimeSpan.FromSeconds(33), Experts.ExpertOptions.ShardMoveTime(s.Hocon));
    }

    [Theory]
    [InlineData("off", null)]
    [InlineData("30s", 30.0)]
    public void The_pause_fence_can_be_turned_off_or_set(string value, double? seconds)
    {
        var s = MoeSettings.Load(NodeRole.Expert, $"moe.node.pause-fence = {value}");
        Assert.Equal(seconds is null ? null : TimeSpan.FromSeconds(seconds.Value), s.Node.PauseFence);
        Assert.Throws<ArgumentException>(() => MoeSettings.Load(NodeRole.Expert, "moe.node.pause-fence = 0s"));
        Assert.Throws<ArgumentException>(() => MoeSettings.Load(NodeRole.Expert, "moe.experts.failover.budget = lots"));
    }
}
