using System.Collections.Concurrent;

namespace MoeServer.Actors.Scheduling;

/// <summary>
/// The one thread model steps run on: it blocks while experts answer, keeps torch's thread-local state (dispose
/// scopes, grad mode) in one place, and leaves the scheduler actor free to admit, cancel and report meanwhile.
/// </summary>
internal sealed class StepThread : IDisposable
{
    private readonly BlockingCollection<(Func<StepResult> Work, TaskCompletionSource<StepResult> Done)> _queue = new();
    private readonly Thread _thread;

    public StepThread(string name)
    {
        _thread = new Thread(Loop) { IsBackground = true, Name = name };
        _thread.Start();
    }

    public Task<StepResult> Run(Func<StepResult> work)
    {
        var tcs = new TaskCompletionSource<StepResult>(TaskCreationOptions.RunContinuationsAsynchronously);
        _queue.Add((work, tcs));
        return tcs.Task;
    }

    private void Loop()
    {
        foreach (var (work, done) in _queue.GetConsumingEnumerable())
        {
            try
            {
                done.SetResult(work());
            }
            catch (Exception ex)
            {
                done.SetException(ex);
            }
        }
    }

    public void Dispose() => _queue.CompleteAdding();
}
