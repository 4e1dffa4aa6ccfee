using MoeServer.Kernels.Native;

namespace MoeServer.Kernels.Tests.Native;

public class WorkerPoolTests
{
    [Theory]
    [InlineData(2)]
    [InlineData(4)]
    public void Every_index_runs_exactly_once_under_repeated_calls(int workers)
    {
        using var pool = new WorkerPool(workers);
        var rng = new Random(workers);
        for (int iter = 0; iter < 3000; iter++)
        {
            int count = rng.Next(1, 70);
            int[] hits = new int[count];
            pool.Parallel(count, i => Interlocked.Increment(ref hits[i]));
            for (int i = 0; i < count; i++)
            {
                Assert.True(hits[i] == 1, $"iteration {iter}: index {i} ran {hits[i]} times (count {count})");
            }

            if (iter % 500 == 0)
            {
                Thread.Sleep(2); // let the workers fall asleep, so the wake-up path is exercised too
            }
        }
    }

    [Fact]
    public unsafe void Function_pointer_variant_runs_every_index_once()
    {
        using var pool = new WorkerPool(3);
        int[] hits = new int[1000];
        fixed (int* p = hits)
        {
            for (int iter = 0; iter < 200; iter++)
            {
                pool.Parallel(1000, &Hit, (nint)p);
            }
        }

        Assert.All(hits, h => Assert.Equal(200, h));
    }

    [Fact]
    public void Concurrent_callers_and_nested_calls_run_every_index_once()
    {
        using var pool = new WorkerPool(2);
        int[] outer = new int[64];
        int[] inner = new int[64 * 8];
        Parallel.For(0, 4, t =>
        {
            for (int iter = 0; iter < 50; iter++)
            {
                pool.Parallel(16, i =>
                {
                    int o = (t * 16) + i;
                    Interlocked.Increment(ref outer[o]);
                    pool.Parallel(8, j => Interlocked.Increment(ref inner[(o * 8) + j]));
                });
            }
        });
        Assert.All(outer, h => Assert.Equal(50, h));
        Assert.All(inner, h => Assert.Equal(50, h));
    }

    [Fact]
    public void Exceptions_reach_the_caller_after_all_indices_ran()
    {
        using var pool = new WorkerPool(2);
        int ran = 0;
        var ex = Assert.Throws<InvalidOperationException>(() => pool.Parallel(32, i =>
        {
            Interlocked.Increment(ref ran);
            if (i == 5)
            {
                throw new InvalidOperationException("boom");
            }
        }));
        Assert.Equal("boom", ex.Message);
        Assert.Equal(32, ran);

        // Still usable afterwards.
        int after = 0;
        pool.Parallel(10, _ => Interlocked.Increment(ref after));
        Assert.Equal(10, after);
    }

    [Fact]
    public void Single_worker_pool_runs_inline()
    {
        using var pool = new WorkerPool(1);
        int thread = Environment.CurrentManagedThreadId;
        pool.Parallel(5, _ => Assert.Equal(thread, Environment.CurrentManagedThreadId));
    }

    private static unsafe void Hit(int i, nint ctx) => Interlocked.Increment(ref ((int*)ctx)[i]);
}
