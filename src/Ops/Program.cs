using MoeServer.Ops;

using var cancel = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) =>
{
    // Ctrl+C ends a tail cleanly (exit 0) instead of killing the process.
    e.Cancel = true;
    cancel.Cancel();
};
return await OpsCli.RunAsync(args, Console.Out, Console.Error, cancel.Token).ConfigureAwait(false);
