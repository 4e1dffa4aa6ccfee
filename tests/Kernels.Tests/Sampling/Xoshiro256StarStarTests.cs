using MoeServer.Kernels.Sampling;

namespace MoeServer.Kernels.Tests.Sampling;

public class Xoshiro256StarStarTests
{
    [Fact]
    public void Matches_the_reference_output_from_a_known_state()
    {
        // Reference implementation (xoshiro256starstar.c) started from state {1, 2, 3, 4}.
        var rng = new Xoshiro256StarStar(1, 2, 3, 4);
        ulong[] expected = [11520, 0, 1509978240, 1215971899390074240, 1216172134540287360, 607988272756665600];
        Assert.Equal(expected, expected.Select(_ => rng.NextUInt64()).ToArray());
    }

    [Fact]
    public void SplitMix64_matches_the_reference_output()
    {
        ulong state = 0;
        Assert.Equal(0xE220A8397B1DCDAFUL, Xoshiro256StarStar.SplitMix64(ref state));
    }

    [Fact]
    public void Seeding_goes_through_SplitMix64()
    {
        var rng = new Xoshiro256StarStar(42L);
        ulong[] expected = [1546998764402558742, 6990951692964543102, 12544586762248559009, 17057574109182124193];
        Assert.Equal(expected, expected.Select(_ => rng.NextUInt64()).ToArray());
    }

    [Fact]
    public void NextDouble_is_in_the_unit_interval_and_roughly_uniform()
    {
        var rng = new Xoshiro256StarStar(7L);
        var buckets = new int[10];
        for (int i = 0; i < 100_000; i++)
        {
            double u = rng.NextDouble();
            Assert.InRange(u, 0.0, 0.9999999999999999);
            buckets[(int)(u * 10)]++;
        }
        Assert.All(buckets, b => Assert.InRange(b, 9_500, 10_500));
    }

    [Fact]
    public void An_all_zero_state_is_rejected()
    {
        Assert.Throws<ArgumentException>(() => new Xoshiro256StarStar(0, 0, 0, 0));
    }
}
