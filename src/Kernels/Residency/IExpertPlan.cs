using MoeServer.Kernels.Model;

namespace MoeServer.Kernels.Residency;

/// <summary>
/// What is known about upcoming expert uses: the time (position in the access stream) of an expert's next planned
/// use. A pre-gate plan knows the next step or the next few layers; a recorded trace knows everything (the Belady bound).
/// </summary>
public interface IExpertPlan
{
    /// <summary>The first planned use of <paramref name="expert"/> strictly after <paramref name="now"/>, or
    /// <see cref="long.MaxValue"/> when none is planned.</summary>
    long NextUse(ExpertId expert, long now);

    /// <summary>The planned uses after <paramref name="now"/> in order, at most <paramref name="count"/> of them.</summary>
    IEnumerable<(long Time, ExpertId Expert)> Upcoming(long now, int count);
}
