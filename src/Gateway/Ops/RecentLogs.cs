namespace MoeServer.Gateway.Ops;

/// <summary>One log line kept for <c>moectl log peek</c>.</summary>
public sealed record LogLine(DateTime Time, string Level, string Category, string Message);

/// <summary>
/// The node's last log lines in memory (every category, Akka's included), for the ops surface: an operator can see
/// what a node said lately without shell access to it. Bounded; the oldest lines go first.
/// </summary>
public sealed class RecentLogs : ILoggerProvider
{
    private readonly Queue<(LogLevel Level, LogLine Line)> _lines = new();
    private readonly int _capacity;

    public RecentLogs(int capacity = 2000) => _capacity = capacity;

    public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);

    /// <summary>The newest <paramref name="count"/> lines at <paramref name="minimum"/> or above, oldest first.</summary>
    public IReadOnlyList<LogLine> Peek(LogLevel minimum, int count)
    {
        lock (_lines) return _lines.Where(l => l.Level >= minimum).Select(l => l.Line).TakeLast(count).ToList();
    }

    private void Add(LogLevel level, LogLine line)
    {
        lock (_lines)
        {
            _lines.Enqueue((level, line));
            if (_lines.Count > _capacity) _lines.Dequeue();
        }
    }

    public void Dispose()
    {
    }

    private sealed class Logger(RecentLogs owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel != LogLevel.None;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (!IsEnabled(logLevel)) return;
            string message = formatter(state, exception) + (exception is null ? "" : $" ({exception.GetType().Name}: {exception.Message})");
            owner.Add(logLevel, new LogLine(DateTime.UtcNow, logLevel.ToString(), category, message));
        }
    }
}
