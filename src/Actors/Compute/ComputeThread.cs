using System.Diagnostics;
using Akka.Dispatch;

namespace MoeServer.Actors.Compute;

/// <summary>
/// A node's compute thread. Model steps run here, and so do the mailboxes of the expert entities (their dispatcher's
/// executor is this thread, see <see cref="ComputeThreadExecutorConfigurator"/>). While a step waits for expert
/// replies it runs the expert mailboxes queued meanwhile (<see cref="RunUntil"/>), so a batch for a local expert runs
/// on the very thread that waits for it: no thread switch per expert, and the kernels' worker threads stay hot
/// between experts as they do in the model's own loop.
/// </summary>
public sealed class ComputeThread : IDisposable
{
    private readonly object _lock = new();
    private readonly Queue<IRunnable> _mailboxes = new();
    private readonly Queue<IRunnable> _betweenSteps = new();
    private readonly Queue<Action> _jobs = new();
    private readonly Thread _thread;
    private long _signals;
    private bool _stopping;

    public ComputeThread(string name)
    {
        _thread = new Thread(Loop) { IsBackground = true, Name = name };
        _thread.Start();
    }

    public bool IsCurrentThread => Thread.CurrentThread == _thread;

    /// <summary>Queues an actor mailbox run (called by the dispatcher's executor).</summary>
    public void Execute(IRunnable run)
    {
        lock (_lock)
        {
            _mailboxes.Enqueue(run);
            Monitor.PulseAll(_lock);
        }
    }

    /// <summary>Queues a mailbox run that must not happen inside a step (the scheduler's: it owns the state a step
    /// reads). It runs right after the step, on this thread: a step's result reaches the scheduler and the next step
    /// starts without a thread switch.</summary>
    public void ExecuteBetweenSteps(IRunnable run)
    {
        lock (_lock)
        {
            _betweenSteps.Enqueue(run);
            Monitor.PulseAll(_lock);
        }
    }

    /// <summary>Queues a job (a model step); it runs after the mailboxes queued before it, never inside another job.</summary>
    public void Post(Action job)
    {
        lock (_lock)
        {
            if (_stopping) throw new ObjectDisposedException(_thread.Name, "the compute thread has stopped");
            _jobs.Enqueue(job);
            Monitor.PulseAll(_lock);
        }
    }

    /// <summary>Wakes a <see cref="RunUntil"/> wait so it re-checks its condition (a reply arrived).</summary>
    public void Signal()
    {
        lock (_lock)
        {
            _signals++;
            Monitor.PulseAll(_lock);
        }
    }

    /// <summary>
    /// Runs queued mailboxes until <paramref name="done"/> holds or <paramref name="deadline"/> passes (false).
    /// Off the compute thread it only waits (the compute thread runs the mailboxes). Whatever makes
    /// <paramref name="done"/> true must call <see cref="Signal"/> afterwards.
    /// </summary>
    public bool RunUntil(Func<bool> done, long deadline)
    {
        bool mine = IsCurrentThread;
        while (true)
        {
            long seen = Volatile.Read(ref _signals);
            if (done()) return true;
            IRunnable? run = null;
            lock (_lock)
            {
                if (mine && _mailboxes.Count > 0)
                {
                    run = _mailboxes.Dequeue();
                }
                else if (_signals == seen)
                {
                    long left = deadline - Stopwatch.GetTimestamp();
                    if (left <= 0) return done();
                    Monitor.Wait(_lock, TimeSpan.FromSeconds(Math.Min(1.0, (double)left / Stopwatch.Frequency)));
                }
            }
            run?.Run();
        }
    }

    private void Loop()
    {
        while (true)
        {
            IRunnable? run = null;
            Action? job = null;
            lock (_lock)
            {
                while (_mailboxes.Count == 0 && _betweenSteps.Count == 0 && _jobs.Count == 0 && !_stopping) Monitor.Wait(_lock);
                if (_mailboxes.Count > 0) run = _mailboxes.Dequeue();
                else if (_betweenSteps.Count > 0) run = _betweenSteps.Dequeue();
                else if (_jobs.Count > 0) job = _jobs.Dequeue();
                else return;
            }
            try
            {
                if (run is not null) run.Run();
                else job!();
            }
            catch (Exception ex)
            {
                // Mailbox runs and jobs report their own failures; this only keeps the thread alive.
                Trace.TraceError($"{_thread.Name}: {ex}");
            }
        }
    }

    /// <summary>Stops the thread once everything queued has run.</summary>
    public void Dispose()
    {
        lock (_lock)
        {
            _stopping = true;
            Monitor.PulseAll(_lock);
        }
    }
}
