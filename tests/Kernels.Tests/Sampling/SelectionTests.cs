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
