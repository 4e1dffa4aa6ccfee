using MoeServer.Ops;

return await OpsCli.RunAsync(args, Console.Out, Console.Error).ConfigureAwait(false);
