namespace MoeServer.Kernels.Jinja;

/// <summary>The <c>loop</c> variable of a for loop.</summary>
internal sealed class LoopContext
{
    private readonly List<object?> _items;

    public LoopContext(List<object?> items) => _items = items;

    public int Index0 { get; set; }

    public object? Get(string name) => name switch
    {
        "index" => (long)(Index0 + 1),
        "index0" => (long)Index0,
        "revindex" => (long)(_items.Count - Index0),
        "revindex0" => (long)(_items.Count - Index0 - 1),
        "first" => Index0 == 0,
        "last" => Index0 == _items.Count - 1,
        "length" => (long)_items.Count,
        "depth" => 1L, // only recursive loops (not supported) go deeper
        "depth0" => 0L,
        "previtem" => Index0 > 0 ? _items[Index0 - 1] : new Undefined("there is no previous item"),
        "nextitem" => Index0 + 1 < _items.Count ? _items[Index0 + 1] : new Undefined("there is no next item"),
        "cycle" => new JinjaCallable("loop.cycle", args =>
        {
            if (args.Positional.Count == 0)
            {
                throw new JinjaRuntimeError("no items for cycling given");
            }

            return args.Positional[Index0 % args.Positional.Count];
        }),
        "changed" => throw new JinjaException("loop.changed() is not supported", 0) { Kind = JinjaErrorKind.Unsupported },
        _ => new Undefined($"'LoopContext' object has no attribute '{name}'"),
    };

    public override string ToString() => $"<LoopContext {Index0 + 1}/{_items.Count}>";
}
