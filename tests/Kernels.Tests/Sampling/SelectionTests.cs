using MoeServer.Kernels.Sampling;

namespace MoeServer.Kernels.Tests.Sampling;

public class SelectionTests
{
    [Theory]
    [InlineData(1, 1)]
    [InlineData(10, 1)]
    [InlineData(10, 10)]
    [InlineData(1000, 7)]
    [InlineData(5000, 64)]
    [InlineData(5000, 4999)]
    public void Sorted_prefix_equals_the_head_of_a_full_sort(int n, int count)
    {
        foreach (var keys in Inputs(n))
        {
            var ids = Enumerable.Range(0, n).ToArray();
            Selection.SelectSortedPrefix(ids.AsSpan(), count, new LogitOrder(keys));
            var expected = Enumerable.Range(0, n).OrderByDescending(i => keys[i]).ThenBy(i => i).Take(count).ToArray();
            Assert.Equal(expected, ids[..count]);
            Assert.Equal(Enumerable.Range(0, n).ToArray(), ids.Order().ToArray()); // still a permutation
        }
    }

    [Fact]
    public void Growing_the_prefix_in_chunks_keeps_the_order()
    {
        var keys = Inputs(20_000).First();
        var ids = Enumerable.Range(0, keys.Length).ToArray();
        var order = new LogitOrder(keys);
        int sorted = 0;
        foreach (int chunk in new[] { 64, 192, 768, 3072 })
        {
            Selection.SelectSortedPrefix(ids.AsSpan(sorted), chunk, order);
            sorted += chunk;
        }
        var expected = Enumerable.Range(0, keys.Length).OrderByDescending(i => keys[i]).ThenBy(i => i).Take(sorted).ToArray();
        Assert.Equal(expected, ids[..sorted]);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(30)]
    [InlineData(5000)]
    public void Sort_orders_by_logit_then_id(int n)
    {
        foreach (var keys in Inputs(n))
        {
            var ids = Enumerable.Range(0, n).Reverse().ToArray();
            Selection.Sort(ids.AsSpan(), new LogitOrder(keys));
            Assert.Equal(Enumerable.Range(0, n).OrderByDescending(i => keys[i]).ThenBy(i => i).ToArray(), ids);
        }
    }

    [Theory]
    [InlineData(10, 0.5)]
    [InlineData(1000, 0.05)]
    [InlineData(1000, 0.9)]
    [InlineData(20_000, 0.95)]
    [InlineData(20_000, 1.5)]   // more than the total: everything
    public void Weighted_prefix_is_the_smallest_head_reaching_the_target(int n, double fraction)
    {
        foreach (var keys in Inputs(n))
        {
            var weights = keys.Select(k => (float)Math.Exp(3 * k)).ToArray();
            double target = fraction * weights.Sum(w => (double)w);
            var ids = Enumerable.Range(0, n).ToArray();
            int count = Selection.WeightedPrefix(ids.AsSpan(), weights, target, new LogitOrder(keys));

            var ranked = Enumerable.Range(0, n).OrderByDescending(i => keys[i]).ThenBy(i => i).ToArray();
            int expected = 0;
            double cumulative = 0;
            while (expected < n && cumulative < target) cumulative += weights[ranked[expected++]];

            // Summation order differs from the reference, so a cut within rounding of the target may move by one.
            Assert.InRange(count, expected - 1, expected + 1);
            Assert.Equal(ranked.Take(count).Order().ToArray(), ids[..count].Order().ToArray());
            Assert.Equal(Enumerable.Range(0, n).ToArray(), ids.Order().ToArray());
        }
    }

    private static IEnumerable<float[]> Inputs(int n)
    {
        var rng = new Random(n);
        yield return Enumerable.Range(0, n).Select(_ => (float)rng.NextDouble()).ToArray();      // random
        yield return Enumerable.Range(0, n).Select(i => (float)i).ToArray();                     // ascending
        yield return Enumerable.Range(0, n).Select(i => (float)-i).ToArray();                    // descending
        yield return Enumerable.Range(0, n).Select(i => (float)(i % 3)).ToArray();               // heavy ties
        yield return new float[n];                                                               // all equal
    }
}
