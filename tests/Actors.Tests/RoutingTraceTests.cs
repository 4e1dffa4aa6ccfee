using MoeServer.Actors.Generation;
using MoeServer.Actors.Hosting;
using MoeServer.Actors.Tests.Support;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Residency;
using MoeServer.Kernels.Sampling;
using MoeServer.Kernels.Tests.Support;

namespace MoeServer.Actors.Tests;

/// <summary>The engine records its routing step by step: every row of every sequence, attributed to the right one.</summary>
public class RoutingTraceTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task A_trace_of_concurrent_requests_attributes_every_row_to_its_sequence()
    {
        await using var node = await TestNode.StartAsync(TinyCheckpoints.Get(ModelArchitecture.Mixtral), NodeRole.All);
        await node.WaitReadyAsync();
        var engine = node.Engine;
        await engine.StartRoutingTraceAsync();
        int[] promptLengths = [5, 19, 40, 3];
        var streams = new List<(string Id, int Prompt, GenerationStream Stream)>();
        for (int i = 0; i < promptLengths.Length; i++)
        {
            var request = new GenerationRequest($"r{i}", GreedyWorkload.Prompt(promptLengths[i], i + 1, 512),
                SamplingParams.Greedy with { MaxTokens = 12 });
            streams.Add(($"r{i}", promptLengths[i], await engine.SubmitAsync(request)));
        }
        var chunks = new Dictionary<string, List<TokenChunk>>();
        using var timeout = new CancellationTokenSource(Patience);
        foreach (var (id, _, stream) in streams)
        {
            chunks[id] = [];
            await foreach (var c in stream.WithCancellation(timeout.Token)) chunks[id].Add(c);
        }
        var trace = await engine.StopRoutingTraceAsync();

        var cfg = engine.Config;
        Assert.Equal(cfg.NumLayers, trace.Layers);
        Assert.NotEmpty(trace.Steps);
        Assert.Contains(trace.Steps, s => s.Segments.Length > 1); // requests really shared steps
        foreach (var (id, prompt, _) in streams)
        {
            // the rows this sequence contributed, in step order: its prompt, then each generated token but the last
            var rows = new List<int[][]>(); // [row][layer] -> experts
            foreach (var step in trace.Steps)
            {
                int start = 0;
                foreach (var seg in step.Segments)
                {
                    if (seg.SequenceId == id)
                    {
                        Assert.True(seg.Prefill || seg.Rows == 1, $"{id}: a decode segment of {seg.Rows} rows");
                        for (int r = start; r < start + seg.Rows; r++)
                            rows.Add(Enumerable.Range(0, cfg.NumLayers).Select(l => step.ExpertsOfRow[l][r]).ToArray());
                    }
                    start += seg.Rows;
                }
            }
            var generated = chunks[id].Where(c => c.TokenId >= 0).ToList();
            Assert.Equal(prompt + generated.Count - 1, rows.Count);
            // The experts a chunk reports are those of the row that produced its logits.
            for (int i = 0; i < generated.Count; i++)
                for (int l = 0; l < cfg.NumLayers; l++)
                    Assert.Equal(generated[i].ExpertsByLayer![l], rows[prompt - 1 + i][l]);
            Assert.All(rows, r => Assert.All(r, experts => Assert.Equal(cfg.NumExpertsPerToken, experts.Distinct().Count())));
        }

        int expectedUses = trace.Steps.Sum(s => s.ExpertsOfRow.Sum(layer => layer.SelectMany(r => r).Distinct().Count()));
        Assert.Equal(expectedUses, trace.ExpertUses().Count);

        using var dir = new TempDir();
        trace.Save(dir.File("trace.jsonl"));
        var loaded = RoutingTrace.Load(dir.File("trace.jsonl"));
        Assert.Equal(trace.ExpertUses(), loaded.ExpertUses());
        Assert.Equal(trace.Steps.Select(s => s.Segments.Length), loaded.Steps.Select(s => s.Segments.Length));

        var notStarted = await Assert.ThrowsAsync<InvalidOperationException>(() => engine.StopRoutingTraceAsync());
        Assert.Contains("start one first", notStarted.Message, StringComparison.Ordinal);
    }
}
