using MoeServer.Kernels.Model;

namespace MoeServer.Actors.Scheduling;

/// <summary>
/// Keys and values of finished requests' prompts, kept so a new prompt that starts with the same tokens (a system
/// prompt, earlier turns of a chat, a few-shot preamble) copies them instead of running their prefill again. Entries are
/// per routing (top-k and disabled experts change the keys and values a prompt produces), bounded in bytes, evicted
/// least recently used. Owned by the scheduler actor.
/// </summary>
internal sealed class PrefixCache(long maxBytes, int minTokens) : IDisposable
{
    private sealed class Entry(int[] tokens, KvCache cache, string routing)
    {
        public int[] Tokens { get; } = tokens;
        public KvCache Cache { get; } = cache;
        public string Routing { get; } = routing;
        public long LastUsed { get; set; }
    }

    private readonly List<Entry> _entries = [];
    private long _clock;

    public long Bytes { get; private set; }
    public int Count => _entries.Count;
    public long Lookups { get; private set; }
    public long Hits { get; private set; }
    public long TokensReused { get; private set; }

    /// <summary>The longest cached prefix of <paramref name="prompt"/> under the same routing (at least min-tokens, and
    /// one token short of the whole prompt: the last prompt token must run to give the first logits), copied into
    /// <paramref name="into"/>; returns how many positions it now holds (0 on a miss).</summary>
    public int TryReuse(int[] prompt, RoutingOverride? routing, KvCache into)
    {
        Lookups++;
        string key = Key(routing);
        Entry? best = null;
        int bestLength = 0;
        foreach (var e in _entries)
        {
            if (e.Routing != key) continue;
            int n = CommonPrefix(e.Tokens, prompt, Math.Min(e.Cache.Length, prompt.Length - 1));
            if (n > bestLength)
            {
                best = e;
                bestLength = n;
            }
        }
        if (best is null || bestLength < minTokens) return 0;
        into.CopyPrefixFrom(best.Cache, bestLength);
        best.LastUsed = ++_clock;
        Hits++;
        TokensReused += bestLength;
        return bestLength;
    }

    /// <summary>Takes a finished request's cache (its first <paramref name="promptTokens"/> positions are the prompt's);
    /// disposes it when it is not worth keeping.</summary>
    public void Offer(int[] prompt, int promptTokens, RoutingOverride? routing, KvCache cache)
    {
        int n = Math.Min(promptTokens, cache.Length);
        if (n < minTokens)
        {
            cache.Dispose();
            return;
        }
        cache.TrimTo(n);
        var tokens = prompt[..n];
        string key = Key(routing);
        // an entry this one extends (or repeats) adds nothing beside it
        for (int i = _entries.Count - 1; i >= 0; i--)
        {
            var e = _entries[i];
            if (e.Routing == key && e.Tokens.Length <= n && CommonPrefix(e.Tokens, tokens, e.Tokens.Length) == e.Tokens.Length)
                Remove(i);
        }
        if (cache.Bytes > maxBytes)
        {
            cache.Dispose();
            return;
        }
        _entries.Add(new Entry(tokens, cache, key) { LastUsed = ++_clock });
        Bytes += cache.Bytes;
        while (Bytes > maxBytes) Remove(_entries.IndexOf(_entries.MinBy(e => e.LastUsed)!));
    }

    private void Remove(int i)
    {
        Bytes -= _entries[i].Cache.Bytes;
        _entries[i].Cache.Dispose();
        _entries.RemoveAt(i);
    }

    private static int CommonPrefix(int[] a, int[] b, int max)
    {
        int n = Math.Min(max, Math.Min(a.Length, b.Length));
        int i = 0;
        while (i < n && a[i] == b[i]) i++;
        return i;
    }

    private static string Key(RoutingOverride? r) => r is null ? "" :
        $"{r.TopKExperts}|{string.Join(",", (r.DisabledExperts ?? new HashSet<(int, int)>()).Order().Select(x => $"{x.Layer}.{x.Expert}"))}";

    public void Dispose()
    {
        foreach (var e in _entries) e.Cache.Dispose();
        _entries.Clear();
        Bytes = 0;
    }
}
