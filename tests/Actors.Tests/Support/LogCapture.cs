using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace MoeServer.Actors.Tests.Support;

/// <summary>Keeps every log line of a node (warnings and up are also echoed to the test output via stderr).</summary>
public sealed class LogCapture : ILoggerProvider
{
    private readonly ConcurrentQueue<string> _lines = new();

    /// <summary>MOE_TEST_VERBOSE=1 echoes every line (information and up), for debugging a test.</summary>
    private static readonly bool Verbose = Environment.GetEnvironmentVariable("MOE_TEST_VERBOSE") == "1";

    public IReadOnlyCollection<string> Lines => _lines;

    public bool Contains(string fragment) => _lines.Any(l => l.Contains(fragment, StringComparison.Ordinal));

    public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);

    public void Dispose()
    {
    }

    private sealed class Logger(LogCapture owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Information;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            string line = $"{DateTime.UtcNow:HH:mm:ss.fff} {logLevel} {category}: {formatter(state, exception)}";
            owner._lines.Enqueue(line);
            if (logLevel >= LogLevel.Warning || Verbose) Console.Error.WriteLine(line);
        }
    }
}
