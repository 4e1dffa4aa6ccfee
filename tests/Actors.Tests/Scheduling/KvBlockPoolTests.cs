using MoeServer.Kernels.Checkpoints;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Model;
using MoeServer.Kernels.Model.Paging;

namespace MoeServer.Actors.Tests.Scheduling;

public class KvBlockPoolTests
{
    [Fact]
    public void Bytes_per_token_count_layers_kv_heads_head_dim_keys_and_values_and_the_dtype()
    {
        var bench = KvShape.For(CheckpointPresets.Config(ModelArchitecture.Mixtral, CheckpointPreset.Bench));
        Assert.Equal(16L * 8 * 64 * 2 * 2, bench.BytesPerToken); // 32 KiB in bf16
        Assert.Equal(2 * bench.BytesPerToken, (bench with { DType = KvDType.Float32 }).BytesPerToken);
        // readme_moe: the decoupled router's own keys and values ride in the same blocks.
        var cfg = CheckpointPresets.Config(ModelArchitecture.RouterDecoupled, CheckpointPreset.Small);
        var rc = cfg.Router!;
        Assert.Equal(2L * 2 * (cfg.NumLayers * cfg.NumKvHeads * cfg.HeadDim + rc.NumLayers * rc.NumKvHeads * rc.HeadDim), KvShape.For(cfg).BytesPerToken);
        Assert.Equal(KvDType.Float32, KvShape.ParseDType("fp32"));
        Assert.Throws<ArgumentException>(() => KvShape.ParseDType("fp16"));
    }

    [Fact]
    public void A_pool_from_a_byte_budget_holds_whole_blocks()
    {
        var shape = new KvShape(2, 2, 8); // 128 bytes per token in bf16
        var pool = KvBlockPool.FromBudget(128 * 16 * 10 + 100, shape, 16);
        Assert.Equal(10, pool.TotalBlocks);
        Assert.Throws<ArgumentException>(() => KvBlockPool.FromBudget(100, shape, 16));
    }

    [Fact]
    public void Allocation_is_all_or_nothing_and_release_returns_blocks()
    {
        var pool = new KvBlockPool(4, 16);
        var a = new List<int>();
        Assert.True(pool.TryAllocate(3, a));
        Assert.Equal(3, pool.UsedBlocks);
        Assert.False(pool.TryAllocate(2, a));
        Assert.Equal(3, a.Count);
        foreach (int b in a) pool.Release(b);
        Assert.Equal(4, pool.FreeBlocks);
        Assert.Throws<InvalidOperationException>(() => pool.Release(a[0]));
        pool.CheckInvariants();
    }

    [Fact]
    public void Full_blocks_are_shared_by_reference_when_their_tokens_and_everything_before_them_repeat()
    {
        var pool = new KvBlockPool(8, 4);
        int[] tokens = [1, 2, 3, 4, 5, 6, 7, 8, 9];
        var first = new List<int>();
        Assert.True(pool.TryAllocate(3, first));
        var h0 = pool.Register(first[0], BlockHash.Root(0), tokens.AsSpan(0, 4), 0);
        pool.Register(first[1], h0, tokens.AsSpan(4, 4), 0);

        var hits = new List<int>();
        Assert.Equal(2, pool.MatchPrefix(tokens, 0, 2, hits, out _));
        Assert.Equal(first.Take(2), hits);
        Assert.Equal(2, pool.RefCount(first[0]));
        Assert.Equal(2, pool.SharedBlocks);

        // The same second block after a different first one is another block (the hash chains).
        var other = new List<int>();
        Assert.Equal(0, pool.MatchPrefix([9, 2, 3, 4, 5, 6, 7, 8], 0, 2, other, out _));
        // Another routing is another key.
        Assert.Equal(0, pool.MatchPrefix(tokens, BlockHash.RoutingKey(new RoutingOverride(TopKExperts: 1)), 2, other, out _));
        pool.CheckInvariants();
    }

    [Fact]
    public void Released_registered_blocks_stay_cached_and_are_evicted_least_recently_released_first()
    {
        var pool = new KvBlockPool(3, 2);
        var a = new List<int>();
        var b = new List<int>();
        Assert.True(pool.TryAllocate(1, a));
        Assert.True(pool.TryAllocate(1, b));
        pool.Register(a[0], BlockHash.Root(0), [1, 2], 0);
        pool.Register(b[0], BlockHash.Root(0), [3, 4], 0);
        pool.Release(a[0]);
        pool.Release(b[0]);
        Assert.Equal(2, pool.CachedBlocks);
        Assert.Equal(1, pool.FreeBlocks);
        Assert.Equal(0, pool.UsedBlocks);

        var c = new List<int>();
        Assert.True(pool.TryAllocate(2, c)); // the free one, then the least recently released cached one (a)
        Assert.Equal(1, pool.Evictions);
        Assert.Contains(a[0], c);
        Assert.Equal(0, pool.MatchPrefix([1, 2], 0, 1, new List<int>(), out _));
        var hit = new List<int>();
        Assert.Equal(1, pool.MatchPrefix([3, 4], 0, 1, hit, out _));
        Assert.Equal(b[0], hit[0]);
        Assert.Equal(0, pool.CachedBlocks);
        pool.CheckInvariants();
    }

    [Fact]
    public void A_block_with_contents_another_block_already_holds_stays_unregistered_and_is_freed_on_release()
    {
        var pool = new KvBlockPool(2, 2);
        var a = new List<int>();
        var b = new List<int>();
        Assert.True(pool.TryAllocate(1, a));
        Assert.True(pool.TryAllocate(1, b));
        var h = pool.Register(a[0], BlockHash.Root(0), [1, 2], 0);
        Assert.Equal(h, pool.Register(b[0], BlockHash.Root(0), [1, 2], 0));
        Assert.Null(pool.HashOf(b[0]));
        pool.Release(b[0]);
        Assert.Equal(1, pool.FreeBlocks);
        Assert.Equal(0, pool.CachedBlocks);
        pool.CheckInvariants();
    }

    [Fact]
    public void Reference_counts_never_go_negative_and_every_block_comes_back_under_random_use()
    {
        for (int seed = 1; seed <= 20; seed++)
        {
            var rng = new Random(seed);
            var pool = new KvBlockPool(24, 4);
            var holders = new List<List<int>>();
            var prefixes = Enumerable.Range(0, 3).Select(_ => Enumerable.Range(0, 16).Select(_ => rng.Next(100)).ToArray()).ToArray();
            for (int op = 0; op < 400; op++)
            {
                switch (rng.Next(4))
                {
                    case 0 or 1:
                    {
                        var tokens = prefixes[rng.Next(3)].Take(4 * rng.Next(1, 5)).ToArray();
                        var held = new List<int>();
                        int hits = pool.MatchPrefix(tokens, 0, tokens.Length / 4, held, out var last);
                        if (!pool.TryAllocate(tokens.Length / 4 - hits, held))
                        {
                            foreach (int b in held) pool.Release(b);
                            break;
                        }
                        for (int i = hits; i < held.Count; i++) last = pool.Register(held[i], last, tokens.AsSpan(4 * i, 4), 0);
                        holders.Add(held);
                        break;
                    }
                    default:
                        if (holders.Count == 0) break;
                        int k = rng.Next(holders.Count);
                        for (int i = holders[k].Count - 1; i >= 0; i--) pool.Release(holders[k][i]);
                        holders.RemoveAt(k);
                        break;
                }
                pool.CheckInvariants();
                for (int b = 0; b < pool.TotalBlocks; b++) Assert.True(pool.RefCount(b) >= 0);
            }
            foreach (var h in holders)
                foreach (int b in h) pool.Release(b);
            pool.CheckInvariants();
            Assert.Equal(0, pool.UsedBlocks);
            Assert.Equal(pool.TotalBlocks, pool.AvailableBlocks);
        }
    }
}
