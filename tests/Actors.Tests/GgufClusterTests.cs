using Akka.Actor;
using MoeServer.Actors.Cluster;
using MoeServer.Actors.Experts;
using MoeServer.Actors.Generation;
using MoeServer.Actors.Hosting;
using MoeServer.Actors.Tests.Support;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Formats.Gguf;
using MoeServer.Kernels.Model;
using MoeServer.Kernels.Sampling;
using MoeServer.Kernels.Tests.Support;

namespace MoeServer.Actors.Tests;

/// <summary>A cluster on a GGUF file: the gateway and an expert node load the same file (the expert node its shards,
/// memory-mapped) and generate what the HF directory generates; a node holding another file of the same weights is
/// refused by the checkpoint guard.</summary>
public class GgufClusterTests
{
    [Fact]
    public async Task Gateway_and_expert_node_serve_one_gguf_file_and_a_node_with_another_file_is_refused()
    {
        string dir = TinyCheckpoints.Get(ModelArchitecture.Qwen2Moe);
        string tmp = Directory.CreateTempSubdirectory("gguf-cluster-").FullName;
        try
        {
            string gguf = Path.Combine(tmp, "q2.gguf");
            GgufExporter.Export(dir, gguf, new GgufExportOptions { Type = GgmlType.BF16 });
            string split = GgufExporter.Export(dir, Path.Combine(tmp, "q2s.gguf"), new GgufExportOptions { Type = GgmlType.BF16, Splits = 2 })[0];
            await using var gateway = await TestNode.StartAsync(gguf, NodeRole.Gateway);
            await using var expert = await TestNode.StartAsync(gguf, NodeRole.Expert, gateway.SeedNode);
            await using var stranger = await TestNode.StartAsync(split, NodeRole.Expert, gateway.SeedNode);
            await gateway.WaitReadyAsync();

            using var model = MoeModel.Load(dir, WeightPrecision.F32);
            int[][] prompts = [[1, 2, 3, 4], [40, 41, 42], [7, 300, 9, 12, 5]];
            foreach (var prompt in prompts)
            {
                var stream = await gateway.Engine.SubmitAsync(new GenerationRequest($"gguf-{Guid.NewGuid():N}", prompt, SamplingParams.Greedy with { MaxTokens = 8 }));
                var ids = new List<int>();
                string? error = null;
                await foreach (var c in stream)
                {
                    if (c.TokenId >= 0) ids.Add(c.TokenId);
                    if (c.IsFinal) error = c.Error;
                }
                Assert.Null(error);
                var (want, margins) = DirectGreedy.Run(model, prompt, 8, eos: new HashSet<int>(model.Config.EosTokenIds));
                DirectGreedy.AssertSameGreedy(want, margins, ids, $"prompt {string.Join(',', prompt)}");
            }
            // Experts answer from the expert node that loaded the file, never from the stranger.
            var hosts = new HashSet<string>();
            foreach (var e in ExpertPinger.AllExperts(gateway.Runtime.Config))
            {
                var pong = await gateway.Runtime.ExpertRegion!.Ask<ExpertProtocol.Pong>(new ExpertProtocol.Ping(e), TimeSpan.FromSeconds(5));
                hosts.Add(pong.Node);
            }
            Assert.DoesNotContain(stranger.Address, hosts);
            Assert.Contains(expert.Address, hosts);
            var deadline = DateTime.UtcNow.AddSeconds(30);
            while (stranger.Runtime.Status.Phase != NodePhase.Refused)
            {
                Assert.True(DateTime.UtcNow < deadline, $"the node was not refused: {stranger.Runtime.Status.Readiness().Reason}");
                await Task.Delay(100);
            }
            Assert.True(stranger.Logs.Contains("differs from the cluster's"), string.Join('\n', stranger.Logs.Lines));
        }
        finally
        {
            Directory.Delete(tmp, true);
        }
    }
}
