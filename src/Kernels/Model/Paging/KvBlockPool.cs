using System.Text;

namespace MoeServer.Kernels.Model.Paging;

/// <summary>
/// The identity of a full KV block's contents: a hash chaining the previous block's hash, the block's token ids and the
/// request's routing (top-k and disabled experts change the keys and values a token produces). Two blocks with the same
/// hash hold the same keys and values, so they can be shared by reference (vLLM's automatic prefix caching).
/// </summary>
public readonly record struct BlockHash(ulong Value)
{
    /// <summary>The hash "before the first block" of a sequence under a routing.</summary>
    public static BlockHash Root(ulong routingKey) => new(Mix(0x6A09E667F3BCC909UL ^ Mix(routingKey + 0x9E3779B97F4A7C15UL)));

    /// <summary>The hash of a block holding <paramref name="tokens"/> after the block whose hash is <paramref name="parent"/>.</summary>
    public static BlockHash Chain(BlockHash parent, ReadOnlySpan<int> tokens, ulong routingKey)
    {
        ulong h = Mix(parent.Value ^ 0xBB67AE8584CAA73BUL);
        foreach (int t in tokens) h = Mix(h ^ ((ulong)(uint)t * 0x9E3779B97F4A7C15UL + 0x3C6EF372FE94F82BUL));
        return new BlockHash(Mix(h ^ routingKey ^ (ulong)tokens.Length));
    }

    /// <summary>A 64-bit key for a routing override (0 for the model's own routing), stable across processes.</summary>
    public static ulong RoutingKey(RoutingOverride? routing)
    {
        if (routing is null || (routing.TopKExperts is null && (routing.DisabledExperts is null || routing.DisabledExperts.Count == 0))) return 0;
        var text = new StringBuilder().Append(routing.TopKExperts?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "-").Append('|');
        foreach (var (layer, expert) in (routing.DisabledExperts ?? new HashSet<(int, int)>()).Order())
            text.Append(layer).Append('.').Append(expert).Append(',');
        ulong h = 0xCBF29CE484222325UL; // FNV-1a
        foreach (char c in text.ToString()) h = (h ^ c) * 0x100000001B3UL;
        return h == 0 ? 1 : h;
    }

    private static ulong Mix(ulong z) // splitmix64's finalizer
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    public override string ToString() => Value.ToString("x16", System.Globalization.CultureInfo.InvariantCulture);
}

/// <summary>What the pool holds now, for the engine's gauges.</summary>
public readonly record struct KvBlockPoolStats(int Total, int Used, int Free, int Cached, int Shared, long Evictions, int BlockSize);

/// <summary>
/// One node's KV memory as fixed-size blocks (<see cref="BlockSize"/> token positions each). Sequences take blocks as
/// they grow and give them back when they end or are preempted; nothing is reserved for tokens not yet produced.
/// <para>Every block has a reference count. A full block may be registered under its <see cref="BlockHash"/>; later
/// sequences whose tokens (and routing) repeat it take it by reference instead of recomputing it. A registered block
/// whose count falls to zero is kept as evictable cache: it still answers prefix lookups, and is reused (least
/// recently released first) only when no never-used or unregistered block is free.</para>
/// Pure bookkeeping: block ids index the storage the attention kernels own. Not thread-safe (one owner: the scheduler).
/// </summary>
public sealed class KvBlockPool
{
    private readonly int[] _refs;
    private readonly BlockHash?[] _hash;
    private readonly BlockHash[] _parent;
    private readonly int[]?[] _tokens;
    private readonly LinkedListNode<int>?[] _lruNode;
    private readonly LinkedList<int> _evictable = new(); // ref 0, registered; head = least recently released
    private readonly Stack<int> _free = new();            // ref 0, unregistered
    private readonly Dictionary<ulong, int> _byHash = [];
    private int _shared;

    public KvBlockPool(int numBlocks, int blockSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(numBlocks);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(blockSize);
        BlockSize = blockSize;
        TotalBlocks = numBlocks;
        _refs = new int[numBlocks];
        _hash = new BlockHash?[numBlocks];
        _parent = new BlockHash[numBlocks];
        _tokens = new int[]?[numBlocks];
        _lruNode = new LinkedListNode<int>?[numBlocks];
        for (int b = numBlocks - 1; b >= 0; b--) _free.Push(b); // block 0 is handed out first
    }

    /// <summary>As many blocks as <paramref name="budgetBytes"/> holds at <paramref name="shape"/>'s bytes per token.</summary>
    public static KvBlockPool FromBudget(long budgetBytes, KvShape shape, int blockSize = DefaultBlockSize)
    {
        ArgumentNullException.ThrowIfNull(shape);
        long blocks = budgetBytes / shape.BytesPerBlock(blockSize);
        if (blocks < 1)
            throw new ArgumentException($"a KV budget of {budgetBytes} bytes holds no block of {blockSize} tokens ({shape.BytesPerBlock(blockSize)} bytes each)", nameof(budgetBytes));
        return new KvBlockPool((int)Math.Min(blocks, int.MaxValue), blockSize);
    }

    public const int DefaultBlockSize = 16;

    public int BlockSize { get; }
    public int TotalBlocks { get; }
    /// <summary>Blocks with no content worth keeping, handed out first.</summary>
    public int FreeBlocks => _free.Count;
    /// <summary>Registered blocks no sequence holds: prefix cache, evicted least recently released first.</summary>
    public int CachedBlocks => _evictable.Count;
    /// <summary>Blocks that can be handed out now (free, or cached and evictable).</summary>
    public int AvailableBlocks => _free.Count + _evictable.Count;
    /// <summary>Blocks at least one sequence holds.</summary>
    public int UsedBlocks => TotalBlocks - AvailableBlocks;
    /// <summary>Blocks more than one sequence holds (shared prefixes).</summary>
    public int SharedBlocks => _shared;
    /// <summary>Registered blocks whose contents were dropped to make room.</summary>
    public long Evictions { get; private set; }

    public KvBlockPoolStats Stats => new(TotalBlocks, UsedBlocks, FreeBlocks, CachedBlocks, SharedBlocks, Evictions, BlockSize);

    /// <summary>Blocks needed to hold <paramref name="tokens"/> positions.</summary>
    public int BlocksFor(int tokens) => (int)(((long)tokens + BlockSize - 1) / BlockSize);

    public int RefCount(int block) => _refs[block];

    public BlockHash? HashOf(int block) => _hash[block];

    /// <summary>Takes <paramref name="count"/> blocks (reference count 1 each) into <paramref name="into"/>, all or none:
    /// free blocks first, then evicting cached ones least recently released first.</summary>
    public bool TryAllocate(int count, List<int> into)
    {
        ArgumentNullException.ThrowIfNull(into);
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        if (count > AvailableBlocks) return false;
        for (int i = 0; i < count; i++)
        {
            int b;
            if (_free.Count > 0) b = _free.Pop();
            else
            {
                b = _evictable.First!.Value;
                RemoveFromLru(b);
                Forget(b);
                Evictions++;
            }
            _refs[b] = 1;
            into.Add(b);
        }
        return true;
    }

    /// <summary>Another holder of a block already held (reference count + 1).</summary>
    public void Retain(int block)
    {
        if (_refs[block] <= 0) throw new InvalidOperationException($"block {block} is not held; take cached blocks through MatchPrefix");
        if (++_refs[block] == 2) _shared++;
    }

    /// <summary>Gives one reference back. At zero a registered block becomes evictable cache, any other one free.</summary>
    public void Release(int block)
    {
        if (_refs[block] <= 0) throw new InvalidOperationException($"block {block} released more often than it was taken");
        if (_refs[block]-- == 2) _shared--;
        if (_refs[block] > 0) return;
        if (_hash[block] is not null) _lruNode[block] = _evictable.AddLast(block);
        else _free.Push(block);
    }

    /// <summary>
    /// Registers a full, held block's contents: <paramref name="tokens"/> (exactly <see cref="BlockSize"/> ids) after the
    /// block hashed <paramref name="parent"/>. Returns the block's hash (the parent of the next block). When another block
    /// already holds the same contents this one stays unregistered (it is freed, not cached, when released).
    /// </summary>
    public BlockHash Register(int block, BlockHash parent, ReadOnlySpan<int> tokens, ulong routingKey)
    {
        if (tokens.Length != BlockSize) throw new ArgumentException($"a full block holds {BlockSize} tokens, got {tokens.Length}", nameof(tokens));
        if (_refs[block] <= 0) throw new InvalidOperationException($"block {block} is not held");
        var h = BlockHash.Chain(parent, tokens, routingKey);
        if (_hash[block] is { } existing)
        {
            if (existing != h) throw new InvalidOperationException($"block {block} is already registered with other contents");
            return h;
        }
        if (_byHash.ContainsKey(h.Value)) return h;
        _byHash[h.Value] = block;
        _hash[block] = h;
        _parent[block] = parent;
        _tokens[block] = tokens.ToArray();
        return h;
    }

    /// <summary>
    /// The longest run of registered blocks that holds the first full blocks of <paramref name="tokens"/> (at most
    /// <paramref name="maxBlocks"/>), each taken by reference into <paramref name="into"/>. Returns how many blocks were
    /// matched; <paramref name="last"/> is the hash of the last one matched (<see cref="BlockHash.Root"/> when none).
    /// </summary>
    public int MatchPrefix(ReadOnlySpan<int> tokens, ulong routingKey, int maxBlocks, List<int> into, out BlockHash last)
    {
        ArgumentNullException.ThrowIfNull(into);
        var parent = BlockHash.Root(routingKey);
        int n = 0;
        while (n < maxBlocks && (n + 1) * BlockSize <= tokens.Length)
        {
            var block = tokens.Slice(n * BlockSize, BlockSize);
            var h = BlockHash.Chain(parent, block, routingKey);
            if (!_byHash.TryGetValue(h.Value, out int b) || _parent[b] != parent || !block.SequenceEqual(_tokens[b])) break;
            if (_refs[b] == 0)
            {
                RemoveFromLru(b);
                _refs[b] = 1;
            }
            else Retain(b);
            into.Add(b);
            parent = h;
            n++;
        }
        last = parent;
        return n;
    }

    /// <summary>Throws when the pool's bookkeeping disagrees with itself (tests and debug checks).</summary>
    public void CheckInvariants()
    {
        int shared = 0, zero = 0;
        for (int b = 0; b < TotalBlocks; b++)
        {
            if (_refs[b] < 0) throw new InvalidOperationException($"block {b} has reference count {_refs[b]}");
            if (_refs[b] > 1) shared++;
            if (_refs[b] == 0) zero++;
            bool inLru = _lruNode[b] is not null;
            if (inLru != (_refs[b] == 0 && _hash[b] is not null)) throw new InvalidOperationException($"block {b} is {(inLru ? "" : "not ")}evictable with count {_refs[b]}");
            if (_hash[b] is { } h && _byHash.GetValueOrDefault(h.Value, -1) != b) throw new InvalidOperationException($"block {b}'s hash does not map back to it");
        }
        if (shared != _shared) throw new InvalidOperationException($"{shared} shared blocks, counted {_shared}");
        if (zero != AvailableBlocks) throw new InvalidOperationException($"{zero} blocks have no holder but {AvailableBlocks} are available");
        if (_free.Distinct().Count() != _free.Count || _free.Any(b => _refs[b] != 0 || _hash[b] is not null))
            throw new InvalidOperationException("the free list holds a block twice, a held block or a registered one");
    }

    private void RemoveFromLru(int b)
    {
        _evictable.Remove(_lruNode[b]!);
        _lruNode[b] = null;
    }

    private void Forget(int b)
    {
        if (_hash[b] is { } h) _byHash.Remove(h.Value);
        _hash[b] = null;
        _tokens[b] = null;
        _parent[b] = default;
    }
}
