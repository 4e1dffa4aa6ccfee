using System.Diagnostics;
using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;

namespace MoeServer.Kernels.Native;

/// <summary>
/// A small persistent pool of spinning worker threads for fork-join loops that last tens of microseconds
/// to milliseconds (decode-time GEMVs: ~200 per token). <see cref="Parallel(int, Action{int})"/> hands the
/// indices 0..count-1 out dynamically to the calling thread and the workers and returns when all have run.
/// </summary>
/// <remarks>
/// <para>Idle workers spin (PAUSE) for <see cref="SpinBeforeSleep"/> (default 50 µs) after their last job,
/// so back-to-back calls cost ~1 µs to dispatch; after that they block on a monitor so an idle server does
/// not burn CPU. The first call after such a sleep pays a wake-up (tens of µs), during which the calling
/// thread already works through the indices itself.</para>
/// <para>One job runs at a time: a call made while another is in flight (from another thread, or nested
/// from inside a body) runs its indices inline on the calling thread. Exceptions thrown by bodies are
/// collected; the first is rethrown on the calling thread after all indices have run.</para>
/// <para>Protocol: one 64-bit word holds (generation, remaining). A claim is a CAS that decrements
/// <c>remaining</c> only while the generation is the one the claimer saw, so a worker that wakes late never
/// runs an index of a newer job with the old job's body; the job fields are read only after a successful
/// claim, when the job cannot have completed.</para>
/// </remarks>
public sealed unsafe class WorkerPool : IDisposable
{
    private static readonly Lazy<WorkerPool> SharedPool = new(() => new WorkerPool(), LazyThreadSafetyMode.ExecutionAndPublication);

    private readonly Thread[] _threads;
    private readonly object _sleepLock = new();
    private readonly long _spinTicks;
    private HotFields _hot;
    private delegate*<int, nint, void> _fn;
    private nint _ctx;
    private Action<int>? _action;
    private int _count;
    private Exception? _error;
    private int _busy;
    private int _sleepers;
    private volatile bool _disposed;

    /// <summary>Creates a pool.</summary>
    /// <param name="workerCount">Participants including the calling thread; 0 means <see cref="Environment.ProcessorCount"/>.
    /// A pool of 1 runs everything inline.</param>
    /// <param name="spinBeforeSleep">How long an idle worker spins before blocking; default 50 µs.</param>
    public WorkerPool(int workerCount = 0, TimeSpan? spinBeforeSleep = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(workerCount);
        WorkerCount = workerCount == 0 ? Environment.ProcessorCount : workerCount;
        SpinBeforeSleep = spinBeforeSleep ?? TimeSpan.FromMicroseconds(50);
        _spinTicks = (long)(SpinBeforeSleep.TotalSeconds * Stopwatch.Frequency);
        _threads = new Thread[WorkerCount - 1];
        for (int i = 0; i < _threads.Length; i++)
        {
            _threads[i] = new Thread(WorkerLoop)
            {
                IsBackground = true,
                Name = $"moe-kernel-worker-{i + 1}",
            };
            _threads[i].Start();
        }
    }

    /// <summary>A process-wide pool with <see cref="Environment.ProcessorCount"/> participants, created on first use.</summary>
    public static WorkerPool Shared => SharedPool.Value;

    /// <summary>Number of participants, the calling thread included.</summary>
    public int WorkerCount { get; }

    /// <summary>How long an idle worker spins before it blocks.</summary>
    public TimeSpan SpinBeforeSleep { get; }

    /// <summary>Runs <paramref name="body"/>(i) for every i in [0, count), spread over the pool; blocks until done.</summary>
    public void Parallel(int count, Action<int> body)
    {
        ArgumentNullException.ThrowIfNull(body);
        Run(count, null, 0, body);
    }

    /// <summary>
    /// Allocation-free variant: runs <paramref name="body"/>(i, <paramref name="context"/>) for every i in [0, count).
    /// <paramref name="context"/> typically points at a struct on the caller's stack, which stays alive because
    /// this call blocks until every index has run.
    /// </summary>
    public void Parallel(int count, delegate*<int, nint, void> body, nint context)
    {
        if (body == null)
        {
            throw new ArgumentNullException(nameof(body));
        }

        Run(count, body, context, null);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        lock (_sleepLock)
        {
            Monitor.PulseAll(_sleepLock);
        }

        foreach (Thread t in _threads)
        {
            t.Join();
        }
    }

    private static void Pause()
    {
        if (X86Base.IsSupported)
        {
            X86Base.Pause();
        }
        else
        {
            Thread.SpinWait(1);
        }
    }

    private void Run(int count, delegate*<int, nint, void> fn, nint ctx, Action<int>? action)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        if (count == 0)
        {
            return;
        }

        ObjectDisposedException.ThrowIf(_disposed, this);
        if (count == 1 || _threads.Length == 0 || Interlocked.CompareExchange(ref _busy, 1, 0) != 0)
        {
            for (int i = 0; i < count; i++)
            {
                if (fn != null)
                {
                    fn(i, ctx);
                }
                else
                {
                    action!(i);
                }
            }

            return;
        }

        try
        {
            _fn = fn;
            _ctx = ctx;
            _action = action;
            _count = count;
            _error = null;
            Volatile.Write(ref _hot.Completed, 0);
            uint gen = (uint)(Volatile.Read(ref _hot.State) >> 32) + 1;

            // Full fence: job fields are visible before the generation, and the read of _sleepers below
            // cannot move above the publish (pairs with the increment-then-recheck in WorkerLoop).
            Interlocked.Exchange(ref _hot.State, ((ulong)gen << 32) | (uint)count);
            if (Volatile.Read(ref _sleepers) > 0)
            {
                lock (_sleepLock)
                {
                    Monitor.PulseAll(_sleepLock);
                }
            }

            RunClaims(gen);
            WaitAllCompleted(count);
            _action = null;
            Exception? error = _error;
            if (error is not null)
            {
                _error = null;
                ExceptionDispatchInfo.Capture(error).Throw();
            }
        }
        finally
        {
            Volatile.Write(ref _busy, 0);
        }
    }

    private void WaitAllCompleted(int count)
    {
        if (Volatile.Read(ref _hot.Completed) == count)
        {
            return;
        }

        long start = Stopwatch.GetTimestamp();
        int spins = 0;
        while (Volatile.Read(ref _hot.Completed) != count)
        {
            // A worker that holds an index may have been descheduled (the cores are shared): after a while
            // give the core away rather than spin against it.
            if ((++spins & 63) == 0 && Stopwatch.GetTimestamp() - start > _spinTicks)
            {
                Thread.Yield();
            }
            else
            {
                Pause();
            }
        }
    }

    private void RunClaims(uint gen)
    {
        while (true)
        {
            ulong s = Volatile.Read(ref _hot.State);
            uint remaining = (uint)s;
            if ((uint)(s >> 32) != gen || remaining == 0)
            {
                return;
            }

            if (Interlocked.CompareExchange(ref _hot.State, s - 1, s) != s)
            {
                continue;
            }

            // Claimed: this job cannot complete before we report, so its fields are stable.
            int index = _count - (int)remaining;
            try
            {
                delegate*<int, nint, void> fn = _fn;
                if (fn != null)
                {
                    fn(index, _ctx);
                }
                else
                {
                    _action!(index);
                }
            }
#pragma warning disable CA1031 // Any body failure is handed to the calling thread.
            catch (Exception e)
#pragma warning restore CA1031
            {
                Interlocked.CompareExchange(ref _error, e, null);
            }

            Interlocked.Increment(ref _hot.Completed);
        }
    }

    private void WorkerLoop()
    {
        uint seen = (uint)(Volatile.Read(ref _hot.State) >> 32);
        while (true)
        {
            long idleStart = Stopwatch.GetTimestamp();
            int spins = 0;
            ulong s;
            while (true)
            {
                s = Volatile.Read(ref _hot.State);
                if ((uint)(s >> 32) != seen || _disposed)
                {
                    break;
                }

                Pause();
                if ((++spins & 63) == 0 && Stopwatch.GetTimestamp() - idleStart > _spinTicks)
                {
                    lock (_sleepLock)
                    {
                        Interlocked.Increment(ref _sleepers);
                        while ((uint)(Volatile.Read(ref _hot.State) >> 32) == seen && !_disposed)
                        {
                            Monitor.Wait(_sleepLock);
                        }

                        Interlocked.Decrement(ref _sleepers);
                    }

                    idleStart = Stopwatch.GetTimestamp();
                }
            }

            if (_disposed)
            {
                return;
            }

            seen = (uint)(s >> 32);
            RunClaims(seen);
        }
    }

    /// <summary>The two contended words, each on its own cache line.</summary>
    [StructLayout(LayoutKind.Explicit, Size = 192)]
    private struct HotFields
    {
        /// <summary>(generation &lt;&lt; 32) | remaining indices.</summary>
        [FieldOffset(64)]
        public ulong State;

        /// <summary>Indices finished in the current generation.</summary>
        [FieldOffset(128)]
        public int Completed;
    }
}
