namespace MoeServer.Kernels.Sampling;

/// <summary>Result of <see cref="StopStringMatcher.Append"/>.</summary>
/// <param name="Text">Text that is safe to send to the client now (possibly empty).</param>
/// <param name="Stopped">True once a stop string has completed; generation should end. <paramref name="Text"/> then
/// ends just before the stop string.</param>
/// <param name="StopString">The stop string that matched, when <paramref name="Stopped"/>.</param>
public readonly record struct StopStringResult(string Text, bool Stopped, string? StopString);

/// <summary>
/// Finds stop strings in streamed generation text (one delta per token), like OpenAI's <c>stop</c>: the text sent to
/// the client ends just before the first stop string, which is not sent, nor is anything after it.
/// </summary>
/// <remarks>
/// <para>A stop string may span any number of deltas, so the matcher holds back the text from the earliest position
/// where a stop string could still begin (a suffix that is a proper prefix of some stop string) and releases it as
/// soon as it cannot be one (or at <see cref="Flush"/>). Everything
/// before that suffix is emitted at once.</para>
/// <para>When several stop strings occur, the one starting earliest in the text wins (the first listed among those
/// starting at the same place), so the result does not depend on how the text was split into deltas. Only generated
/// text is searched, never the prompt. Matching is ordinal (exact UTF-16). A trailing high surrogate is held back
/// until its pair arrives so that emitted text never ends inside a surrogate pair.</para>
/// <para>Not thread-safe; one instance per sequence.</para>
/// </remarks>
public sealed class StopStringMatcher
{
    private readonly string[] _stops;
    private readonly int _maxPrefix;
    private string _held = string.Empty;
    private bool _flushed;

    /// <summary>Creates a matcher; null or empty means no stop strings (every delta passes straight through).</summary>
    /// <exception cref="ArgumentException">A stop string is null or empty.</exception>
    public StopStringMatcher(IEnumerable<string>? stopStrings)
    {
        _stops = stopStrings?.ToArray() ?? [];
        foreach (string s in _stops)
        {
            if (string.IsNullOrEmpty(s))
                throw new ArgumentException("Stop strings must not be null or empty.", nameof(stopStrings));
        }
        _maxPrefix = _stops.Length == 0 ? 0 : _stops.Max(s => s.Length) - 1;
    }

    /// <summary>True once a stop string has completed.</summary>
    public bool IsStopped { get; private set; }

    /// <summary>The stop string that completed, if any.</summary>
    public string? MatchedStopString { get; private set; }

    /// <summary>Text received but not yet emitted because it may begin a stop string.</summary>
    public string HeldBackText => _held;

    /// <summary>
    /// Takes the next text delta and returns what can be emitted now. After a stop, further deltas are ignored
    /// (empty text, <see cref="StopStringResult.Stopped"/> still true).
    /// </summary>
    /// <exception cref="InvalidOperationException">Called after <see cref="Flush"/>.</exception>
    public StopStringResult Append(ReadOnlySpan<char> delta)
    {
        if (_flushed) throw new InvalidOperationException("The matcher was flushed; it takes no more text.");
        if (IsStopped) return new StopStringResult(string.Empty, true, MatchedStopString);
        if (_stops.Length == 0 && !HasTrailingHighSurrogate(_held) && !HasTrailingHighSurrogate(delta))
        {
            string passed = _held.Length == 0 ? delta.ToString() : string.Concat(_held, delta);
            _held = string.Empty;
            return new StopStringResult(passed, false, null);
        }

        string text = string.Concat(_held, delta);

        // A complete stop string: the earliest start wins. The held text alone contained none, so any match ends in
        // the new delta, but it may start anywhere in the held text.
        int best = -1;
        string? matched = null;
        foreach (string stop in _stops)
        {
            int at = text.IndexOf(stop, StringComparison.Ordinal);
            if (at >= 0 && (best < 0 || at < best))
            {
                best = at;
                matched = stop;
            }
        }
        if (matched is not null)
        {
            IsStopped = true;
            MatchedStopString = matched;
            _held = string.Empty;
            return new StopStringResult(text[..best], true, matched);
        }

        int hold = HoldStart(text);
        _held = text[hold..];
        return new StopStringResult(text[..hold], false, null);
    }

    /// <summary>
    /// Ends the stream: returns the held-back text (empty after a stop, since text after a stop string is dropped).
    /// </summary>
    public string Flush()
    {
        _flushed = true;
        string rest = IsStopped ? string.Empty : _held;
        _held = string.Empty;
        return rest;
    }

    /// <summary>Start of the longest suffix of <paramref name="text"/> that is a proper prefix of a stop string
    /// (or a lone trailing high surrogate); text.Length when there is none.</summary>
    private int HoldStart(string text)
    {
        int start = text.Length;
        for (int j = Math.Max(0, text.Length - _maxPrefix); j < text.Length; j++)
        {
            ReadOnlySpan<char> tail = text.AsSpan(j);
            bool couldStart = false;
            foreach (string stop in _stops)
            {
                if (stop.AsSpan().StartsWith(tail, StringComparison.Ordinal))
                {
                    couldStart = true;
                    break;
                }
            }
            if (couldStart)
            {
                start = j;
                break;
            }
        }
        if (start > 0 && char.IsHighSurrogate(text[start - 1])) start--;
        return start;
    }

    private static bool HasTrailingHighSurrogate(ReadOnlySpan<char> s) => !s.IsEmpty && char.IsHighSurrogate(s[^1]);
}
