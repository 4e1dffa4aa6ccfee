using MoeServer.Kernels.Model;
using Akka.Actor;
using MoeServer.Kernels.Config;

namespace MoeServer.Actors.Experts;

/// <summary>Pings every expert entity of the model (starting the ones not running yet, which loads their weights).</summary>
public static class ExpertPinger
{
    public static IEnumerable<ExpertId> AllExperts(ModelConfig cfg)
    {
        for (int l = 0; l < cfg.NumLayers; l++)
        {
            if (!cfg.IsSparseLayer(l)) continue;
            for (int e = 0; e < cfg.NumExperts; e++) yield return new ExpertId(l, e);
        }
    }

    /// <summary>Experts that did not answer within <paramref name="timeout"/> (or answered with a load error).</summary>
    public static async Task<IReadOnlyList<(ExpertId Expert, string Problem)>> PingAllAsync(IActorRef region, ModelConfig cfg, TimeSpan timeout)
    {
        var experts = AllExperts(cfg).ToArray();
        var asks = experts.Select(e => region.Ask<ExpertProtocol.Pong>(new ExpertProtocol.Ping(e), timeout)).ToArray();
        try
        {
            await Task.WhenAll(asks).ConfigureAwait(false);
        }
        catch (Exception)
        {
            // Inspected per task below.
        }
        var problems = new List<(ExpertId, string)>();
        for (int i = 0; i < experts.Length; i++)
        {
            var t = asks[i];
            if (!t.IsCompletedSuccessfully) problems.Add((experts[i], $"no answer within {timeout.TotalSeconds:0.#} s"));
            else if (t.Result.Error is { } err) problems.Add((experts[i], err));
        }
        return problems;
    }
}
