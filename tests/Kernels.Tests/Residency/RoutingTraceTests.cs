using MoeServer.Kernels.Model;
using MoeServer.Kernels.Residency;

namespace MoeServer.Kernels.Tests.Residency;

public sealed class RoutingTraceTests
{
    [Fact]
    public void Expert_uses_are_each_needed_expert_once_per_step_and_layer_in_ascending_order()
    {
        var trace = new RoutingTrace("mixtral", layers: 2, experts: 4);
        // rows: a's prefill chunk of 2 tokens, b's decode token; layer 1 is dense (no routing)
        trace.Append(new TraceStep(1, [new("a", 2, true), new("b", 1, false)], [[[3], [1], [3]], []]));
        trace.Append(new TraceStep(2, [new("a", 1, false)], [[[2]], []]));
        Assert.Equal([new ExpertId(0, 1), new ExpertId(0, 3), new ExpertId(0, 2)], trace.ExpertUses());
        Assert.Equal([1L, 1, 2], trace.StepEnds());
        // A plan that sees to the end of the current step knows E3 at time 0, not E2 (next step).
        var plan = new SequencePlan(trace.ExpertUses(), now => trace.StepEnds()[now]);
        Assert.Equal(1, plan.NextUse(new ExpertId(0, 3), 0));
        Assert.Equal(long.MaxValue, plan.NextUse(new ExpertId(0, 2), 0));
        Assert.Equal(long.MaxValue, plan.NextUse(new ExpertId(0, 2), 1)); // the next step is planned only once it starts
    }

    [Fact]
    public void A_step_whose_rows_do_not_match_its_segments_is_refused()
    {
        var trace = new RoutingTrace("mixtral", layers: 1, experts: 4);
        var bad = Assert.Throws<ArgumentException>(() => trace.Append(new TraceStep(7, [new("a", 1, false)], [[[0], [1]]])));
        Assert.Contains("step 7", bad.Message, StringComparison.Ordinal);
        Assert.Empty(trace.Steps);
    }

    [Fact]
    public void Keep_rate_compares_each_token_with_the_same_sequences_previous_token()
    {
        var trace = new RoutingTrace("mixtral", layers: 1, experts: 4);
        // a: [1,2] then [2,1] (kept: same set) then [0,1] (not); b interleaved: [3,0] then [3,0] (kept)
        trace.Append(new TraceStep(1, [new("a", 2, true), new("b", 1, true)], [[[1, 2], [2, 1], [3, 0]]]));
        trace.Append(new TraceStep(2, [new("b", 1, false), new("a", 1, false)], [[[3, 0], [0, 1]]]));
        Assert.Equal(2.0 / 3.0, trace.KeepsLastExperts()[0], 1e-12);
    }
}
