using System.Globalization;
using System.Text.RegularExpressions;

namespace MoeServer.Kernels.Jinja;

/// <summary>jinja2's built-in filters and tests (those chat templates use), with transformers' <c>tojson</c>.</summary>
internal sealed partial class Evaluator
{
    internal static readonly HashSet<string> FilterNames = new(StringComparer.Ordinal)
    {
        "abs", "attr", "capitalize", "count", "d", "default", "dictsort", "e", "escape", "first", "float", "format", "indent",
        "int", "items", "join", "last", "length", "list", "lower", "map", "max", "min", "reject", "rejectattr", "replace",
        "reverse", "round", "safe", "select", "selectattr", "sort", "string", "sum", "title", "tojson", "trim", "unique", "upper",
        "wordcount",
    };

    internal static readonly HashSet<string> TestNames = new(StringComparer.Ordinal)
    {
        "boolean", "callable", "defined", "divisibleby", "eq", "equalto", "==", "escaped", "even", "false", "float", "ge", ">=",
        "greaterthan", "gt", ">", "in", "integer", "iterable", "le", "<=", "lessthan", "lower", "lt", "<", "mapping", "ne", "!=",
        "none", "number", "odd", "sameas", "sequence", "string", "true", "undefined", "upper", "filter", "test",
    };

    private static readonly HashSet<string> JinjaOnlyFilters = new(StringComparer.Ordinal)
    {
        "batch", "center", "filesizeformat", "forceescape", "groupby", "pprint", "random", "slice", "striptags", "truncate",
        "urlencode", "urlize", "wordwrap", "xmlattr",
    };

    internal static readonly HashSet<string> JinjaOnlyTests = new(StringComparer.Ordinal); // every jinja2 test is implemented

    [GeneratedRegex(@"([-\s({\[<]+)")]
    private static partial Regex WordBeginningSplit();

    private static (object?[] Values, bool[] Given) BindArgs(CallArgs args, string what, params (string Name, object? Default)[] ps)
    {
        var values = new object?[ps.Length];
        var given = new bool[ps.Length];
        if (args.Positional.Count > ps.Length)
        {
            throw new JinjaRuntimeError($"{what}() takes at most {ps.Length} argument(s) ({args.Positional.Count} given)");
        }

        for (int i = 0; i < ps.Length; i++)
        {
            values[i] = ps[i].Default;
        }

        for (int i = 0; i < args.Positional.Count; i++)
        {
            values[i] = args.Positional[i];
            given[i] = true;
        }

        foreach (KeyValuePair<string, object?> kv in args.Keyword)
        {
            int idx = Array.FindIndex(ps, p => p.Name == kv.Key);
            if (idx < 0)
            {
                throw new JinjaRuntimeError($"{what}() got an unexpected keyword argument '{kv.Key}'");
            }

            values[idx] = kv.Value;
            given[idx] = true;
        }

        return (values, given);
    }

    internal static JinjaException UnknownFilter(string name, int line) =>
        new($"the filter '{name}' {(JinjaOnlyFilters.Contains(name) ? "is not supported by this interpreter" : "does not exist")}", line) { Kind = JinjaErrorKind.Unsupported };

    private object? ApplyFilter(FilterExpr f, object? value, Frame frame)
    {
        CallArgs args = EvalArgs(f.Args, frame);
        return Filter(f.Name, value, args);
    }

    internal static object? Filter(string name, object? value, CallArgs args)
    {
        switch (name)
        {
            case "default" or "d":
                {
                    (object?[] a, _) = BindArgs(args, name, ("default_value", string.Empty), ("boolean", false));
                    return value is Undefined || (Py.Truthy(a[1]) && !Py.Truthy(value)) ? a[0] : value;
                }

            case "length" or "count":
                return (long)Length(value);
            case "first":
                {
                    List<object?> items = Iterate(value);
                    return items.Count > 0 ? items[0] : new Undefined("No first item, sequence was empty.");
                }

            case "last":
                {
                    List<object?> items = Iterate(value);
                    return items.Count > 0 ? items[^1] : new Undefined("No last item, sequence was empty.");
                }

            case "join":
                {
                    (object?[] a, _) = BindArgs(args, name, ("d", string.Empty), ("attribute", null));
                    IEnumerable<object?> items = Iterate(value);
                    if (a[1] is not null)
                    {
                        items = items.Select(Attribute(a[1]));
                    }

                    return string.Join(Py.Str(a[0]), items.Select(Py.Str));
                }

            case "upper":
                return Py.Str(value).ToUpperInvariant();
            case "lower":
                return Py.Str(value).ToLowerInvariant();
            case "capitalize":
                return Methods.Capitalize(Py.Str(value));
            case "title":
                return string.Concat(WordBeginningSplit().Split(Py.Str(value)).Where(x => x.Length > 0)
                    .Select(x => char.ToUpperInvariant(x[0]) + x[1..].ToLowerInvariant()));
            case "trim":
                {
                    (object?[] a, _) = BindArgs(args, name, ("chars", null));
                    return Methods.Strip(Py.Str(value), a[0], true, true);
                }

            case "replace":
                {
                    (object?[] a, _) = BindArgs(args, name, ("old", null), ("new", null), ("count", null));
                    return Methods.Replace(Py.Str(value), Py.Str(a[0]), Py.Str(a[1]), a[2] is null ? -1 : Py.ToLong(a[2]));
                }

            case "string":
                return Py.Str(value);
            case "safe":
                return value;
            case "e" or "escape":
                return value is Undefined ? string.Empty : Py.Str(value).Replace("&", "&amp;", StringComparison.Ordinal).Replace("<", "&lt;", StringComparison.Ordinal)
                    .Replace(">", "&gt;", StringComparison.Ordinal).Replace("\"", "&#34;", StringComparison.Ordinal).Replace("'", "&#39;", StringComparison.Ordinal);
            case "list":
                return new List<object?>(Iterate(value));
            case "items":
                return value switch
                {
                    Undefined => new PyIterable("generator", [], sized: false),
                    Dictionary<string, object?> d => new PyIterable("generator", d.Select(kv => (object?)new PyTuple([kv.Key, kv.Value])).ToList(), sized: false),
                    _ => throw new JinjaRuntimeError($"Can only get item pairs from a mapping, not {Py.TypeName(value)}"),
                };
            case "dictsort":
                {
                    (object?[] a, _) = BindArgs(args, name, ("case_sensitive", false), ("by", "key"), ("reverse", false));
                    if (value is not Dictionary<string, object?> d)
                    {
                        throw new JinjaRuntimeError("dictsort needs a mapping");
                    }

                    int pos = Py.Str(a[1]) == "value" ? 1 : 0;
                    bool cs = Py.Truthy(a[0]);
                    List<object?> pairs = d.Select(kv => (object?)new PyTuple([kv.Key, kv.Value])).ToList();
                    return SortBy(pairs, p => Fold(((PyTuple)p!)[pos], cs), Py.Truthy(a[2]));
                }

            case "int":
                {
                    (object?[] a, _) = BindArgs(args, name, ("default", 0L), ("base", 10L));
                    RequireDefined(value);
                    return ToInt(value, a[0], Py.ToLong(a[1]));
                }

            case "float":
                {
                    (object?[] a, _) = BindArgs(args, name, ("default", 0.0));
                    RequireDefined(value);
                    return value switch
                    {
                        double d => d,
                        long or bool => Py.ToDouble(value),
                        string s when double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out double p) => p,
                        _ => a[0],
                    };
                }

            case "abs":
                return value switch
                {
                    long l => (object)Math.Abs(l),
                    double d => Math.Abs(d),
                    bool b => b ? 1L : 0L,
                    _ => throw new JinjaRuntimeError($"bad operand type for abs(): '{Py.TypeName(value)}'"),
                };
            case "round":
                {
                    (object?[] a, _) = BindArgs(args, name, ("precision", 0L), ("method", "common"));
                    RequireDefined(value);
                    if (value is long or bool && Py.Str(a[1]) == "common")
                    {
                        return Py.ToLong(value); // Python's round() of an int is that int
                    }

                    double v = Py.ToDouble(value);
                    int p = (int)Py.ToLong(a[0]);
                    double scale = Math.Pow(10, p);
                    return Py.Str(a[1]) switch
                    {
                        "common" => p is >= 0 and <= 15 ? Math.Round(v, p, MidpointRounding.ToEven) : Math.Round(v * scale, MidpointRounding.ToEven) / scale,
                        "ceil" => Math.Ceiling(v * scale) / scale,
                        "floor" => Math.Floor(v * scale) / scale,
                        _ => throw new JinjaRuntimeError("method must be common, ceil or floor"),
                    };
                }

            case "indent":
                {
                    (object?[] a, _) = BindArgs(args, name, ("width", 4L), ("first", false), ("blank", false));
                    RequireDefined(value);
                    if (value is not string)
                    {
                        throw new JinjaRuntimeError($"unsupported operand type(s) for +=: '{Py.TypeName(value)}' and 'str'");
                    }

                    return Indent((string)value, a[0] is string w ? w : new string(' ', (int)Py.ToLong(a[0])), Py.Truthy(a[1]), Py.Truthy(a[2]));
                }

            case "unique":
                {
                    (object?[] a, _) = BindArgs(args, name, ("case_sensitive", false), ("attribute", null));
                    Func<object?, object?> key = a[1] is null ? x => x : Attribute(a[1]);
                    bool cs = Py.Truthy(a[0]);
                    var seen = new List<object?>();
                    var result = new List<object?>();
                    foreach (object? item in Iterate(value))
                    {
                        object? k = Fold(key(item), cs);
                        if (!seen.Any(s => Py.Equals(s, k)))
                        {
                            seen.Add(k);
                            result.Add(item);
                        }
                    }

                    return new PyIterable("generator", result, sized: false);
                }

            case "reverse":
                if (value is string rs)
                {
                    List<string> cps = Py.CodePoints(rs);
                    cps.Reverse();
                    return string.Concat(cps);
                }
                else
                {
                    var l = new List<object?>(Iterate(value));
                    l.Reverse();
                    return value switch
                    {
                        PyTuple => new PyIterable("reversed", l, sized: false),
                        List<object?> => new PyIterable("list_reverseiterator", l, sized: false),
                        Dictionary<string, object?> => new PyIterable("dict_reversekeyiterator", l, sized: false),
                        PyIterable { Sized: true } v => new PyIterable(v.Kind.Replace("dict_", "dict_reverse", StringComparison.Ordinal) + "iterator", l, sized: false),
                        _ => l, // a generator: jinja2 falls back to a reversed list
                    };
                }

            case "sort":
                {
                    (object?[] a, _) = BindArgs(args, name, ("reverse", false), ("case_sensitive", false), ("attribute", null));
                    Func<object?, object?> key = a[2] is null ? x => x : Attribute(a[2]);
                    bool cs = Py.Truthy(a[1]);
                    return SortBy(Iterate(value), x => Fold(key(x), cs), Py.Truthy(a[0]));
                }

            case "min" or "max":
                {
                    (object?[] a, _) = BindArgs(args, name, ("case_sensitive", false), ("attribute", null));
                    Func<object?, object?> key = a[1] is null ? x => x : Attribute(a[1]);
                    bool cs = Py.Truthy(a[0]);
                    List<object?> items = Iterate(value);
                    if (items.Count == 0)
                    {
                        return new Undefined($"No aggregated item, sequence was empty.");
                    }

                    object? best = items[0];
                    foreach (object? item in items.Skip(1))
                    {
                        int c = Py.Compare(Fold(key(item), cs), Fold(key(best), cs), "<");
                        if (name == "min" ? c < 0 : c > 0)
                        {
                            best = item;
                        }
                    }

                    return best;
                }

            case "sum":
                {
                    (object?[] a, _) = BindArgs(args, name, ("attribute", null), ("start", 0L));
                    object? total = a[1];
                    foreach (object? item in Iterate(value))
                    {
                        total = Arith("+", total, a[0] is null ? item : Attribute(a[0])(item));
                    }

                    return total;
                }

            case "wordcount":
                return (long)Regex.Count(Py.Str(value), @"\w+");
            case "tojson":
                {
                    (object?[] a, _) = BindArgs(args, name, ("ensure_ascii", false), ("indent", null), ("separators", null), ("sort_keys", false));
                    string? indent = a[1] switch
                    {
                        null => null,
                        string s => s,
                        long n => new string(' ', (int)Math.Max(0, n)),
                        _ => throw new JinjaRuntimeError("indent must be an int or a string"),
                    };
                    string? itemSep = null, keySep = null;
                    if (a[2] is List<object?> { Count: 2 } seps)
                    {
                        itemSep = Py.Str(seps[0]);
                        keySep = Py.Str(seps[1]);
                    }

                    return Py.ToJson(value, Py.Truthy(a[0]), indent, itemSep, keySep, Py.Truthy(a[3]));
                }

            case "format":
                return Methods.PercentFormat(Py.Str(value), args.Positional.Count == 1 ? args.Positional[0] : new PyTuple(args.Positional));
            case "attr":
                {
                    (object?[] a, _) = BindArgs(args, name, ("name", null));
                    return GetAttr(value, Py.Str(a[0]));
                }

            case "map":
                {
                    List<object?> items = Iterate(value);
                    if (args.Positional.Count == 0)
                    {
                        (object?[] a, bool[] given) = BindArgs(args, name, ("attribute", null), ("default", null));
                        if (a[0] is null)
                        {
                            throw new JinjaRuntimeError("map requires a filter name or attribute=");
                        }

                        Func<object?, object?> get = Attribute(a[0]);
                        return new PyIterable("generator", items.Select(x =>
                        {
                            object? v = get(x);
                            return given[1] && v is Undefined ? a[1] : v;
                        }).ToList(), sized: false);
                    }

                    string filter = Py.Str(args.Positional[0]);
                    if (!FilterNames.Contains(filter))
                    {
                        throw new JinjaException($"the filter '{filter}' (used in map) is not supported", 0) { Kind = JinjaErrorKind.Unsupported };
                    }

                    var rest = new CallArgs(args.Positional.Skip(1).ToList(), args.Keyword);
                    return new PyIterable("generator", items.Select(x => Filter(filter, x, rest)).ToList(), sized: false);
                }

            case "select" or "reject" or "selectattr" or "rejectattr":
                {
                    bool byAttr = name.EndsWith("attr", StringComparison.Ordinal);
                    bool keep = name.StartsWith("select", StringComparison.Ordinal);
                    int k = 0;
                    Func<object?, object?> get = x => x;
                    if (byAttr)
                    {
                        if (args.Positional.Count == 0)
                        {
                            throw new JinjaRuntimeError($"{name} requires an attribute name");
                        }

                        get = Attribute(args.Positional[0]);
                        k = 1;
                    }

                    string? test = args.Positional.Count > k ? Py.Str(args.Positional[k]) : null;
                    var testArgs = new CallArgs(args.Positional.Skip(k + 1).ToList(), args.Keyword);
                    if (test is not null && !TestNames.Contains(test))
                    {
                        throw new JinjaException($"the test '{test}' (used in {name}) is not supported", 0) { Kind = JinjaErrorKind.Unsupported };
                    }

                    return new PyIterable("generator", Iterate(value).Where(x =>
                    {
                        object? v = get(x);
                        bool r = test is null ? Py.Truthy(v) : Test(test, v, testArgs);
                        return r == keep;
                    }).ToList(), sized: false);
                }

            default:
                throw new JinjaException($"the filter '{name}' is not supported", 0) { Kind = JinjaErrorKind.Unsupported };
        }
    }

    private static object? Fold(object? v, bool caseSensitive) => !caseSensitive && v is string s ? s.ToLowerInvariant() : v;

    private static List<object?> SortBy(List<object?> items, Func<object?, object?> key, bool reverse)
    {
        var keyed = items.Select((x, i) => (Item: x, Key: key(x), Index: i)).ToList();
        keyed.Sort((p, q) =>
        {
            int c = Py.Compare(p.Key, q.Key, "<");
            if (reverse)
            {
                c = -c;
            }

            return c != 0 ? c : p.Index.CompareTo(q.Index);
        });
        return keyed.Select(p => p.Item).ToList();
    }

    /// <summary>jinja2's make_attrgetter: "a.b.0" looks up item a, then b, then index 0.</summary>
    private static Func<object?, object?> Attribute(object? spec)
    {
        if (spec is long or bool)
        {
            return x => GetItem(x, spec);
        }

        string[] parts = Py.Str(spec).Split('.');
        return x =>
        {
            object? v = x;
            foreach (string p in parts)
            {
                v = long.TryParse(p, NumberStyles.None, CultureInfo.InvariantCulture, out long idx) ? GetItem(v, idx) : GetItem(v, p);
            }

            return v;
        };
    }

    internal static int Length(object? value) => value switch
    {
        string s => Py.CodePointLength(s),
        List<object?> l => l.Count,
        Dictionary<string, object?> d => d.Count,
        Undefined => 0,
        PyIterable { Sized: true } it => it.Items.Count,
        JinjaNamespace => throw new JinjaRuntimeError("object of type 'Namespace' has no len()"),
        _ => throw new JinjaRuntimeError($"object of type '{Py.TypeName(value)}' has no len()"),
    };

    private static object? ToInt(object? value, object? def, long numberBase)
    {
        switch (value)
        {
            case long or bool:
                return Py.ToLong(value);
            case double d:
                return double.IsFinite(d) ? (long)Math.Truncate(d) : def;
            case string s:
                {
                    string t = s.Trim().Replace("_", string.Empty, StringComparison.Ordinal);
                    try
                    {
                        return Convert.ToInt64(t, (int)numberBase);
                    }
                    catch (Exception e) when (e is FormatException or ArgumentException or OverflowException)
                    {
                        return numberBase == 10 && double.TryParse(t, NumberStyles.Float, CultureInfo.InvariantCulture, out double f) ? (long)Math.Truncate(f) : def;
                    }
                }

            default:
                return def;
        }
    }

    private static string Indent(string s, string indention, bool first, bool blank)
    {
        s += "\n";
        List<string> lines = Methods.SplitLines(s, keepEnds: false);
        string rv;
        if (blank)
        {
            rv = string.Join("\n" + indention, lines);
        }
        else
        {
            rv = lines[0];
            if (lines.Count > 1)
            {
                rv += "\n" + string.Join("\n", lines.Skip(1).Select(l => l.Length > 0 ? indention + l : l));
            }
        }

        return first ? indention + rv : rv;
    }

    private bool ApplyTest(TestExpr t, Frame frame)
    {
        if (!TestNames.Contains(t.Name))
        {
            throw new JinjaException($"the test '{t.Name}' is not supported", t.Line) { Kind = JinjaErrorKind.Unsupported };
        }

        object? value = Eval(t.Target, frame);
        return Test(t.Name, value, EvalArgs(t.Args, frame));
    }

    internal static bool Test(string name, object? value, CallArgs args)
    {
        object? Arg0() => args.Positional.Count > 0 ? args.Positional[0]
            : args.Keyword.Count > 0 ? args.Keyword[0].Value
            : throw new JinjaRuntimeError($"the test '{name}' needs an argument");
        switch (name)
        {
            case "defined": return value is not Undefined;
            case "undefined": return value is Undefined;
            case "none": return value is null;
            case "boolean": return value is bool;
            case "true": return value is true;
            case "false": return value is false;
            case "integer": return value is long;
            case "float": return value is double;
            case "number": return value is long or double or bool;
            case "string": return value is string;
            case "mapping": return value is Dictionary<string, object?>;
            case "iterable": return value is string or List<object?> or Dictionary<string, object?> or Undefined or PyIterable;
            case "sequence": return value is string or List<object?> or Dictionary<string, object?> or Undefined;
            case "callable": return value is JinjaCallable or Undefined; // Undefined has __call__ (which raises)
            case "escaped": return false;
            case "odd": return Py.Equals(Arith("%", value, 2L), 1L);
            case "even": return Py.Equals(Arith("%", value, 2L), 0L);
            case "divisibleby": return Py.Equals(Arith("%", value, Arg0()), 0L);
            case "eq" or "equalto" or "==": return Py.Equals(value, Arg0());
            case "ne" or "!=": return !Py.Equals(value, Arg0());
            case "lt" or "lessthan" or "<": return CompareOp("<", value, Arg0());
            case "le" or "<=": return CompareOp("<=", value, Arg0());
            case "gt" or "greaterthan" or ">": return CompareOp(">", value, Arg0());
            case "ge" or ">=": return CompareOp(">=", value, Arg0());
            case "in": return Contains(Arg0(), value);
            case "sameas":
                {
                    // Python identity: None, booleans and (small) ints are singletons.
                    object? other = Arg0();
                    return value is null or bool or long ? other is not double && Py.Equals(value, other) && (value is bool) == (other is bool) : ReferenceEquals(value, other);
                }
            case "lower": return Py.Str(value) is var ls && ls.Any(char.IsLetter) && !ls.Any(char.IsUpper);
            case "upper": return Py.Str(value) is var us && us.Any(char.IsLetter) && !us.Any(char.IsLower);
            case "filter": return FilterNames.Contains(Py.Str(value));
            case "test": return TestNames.Contains(Py.Str(value));
            default:
                throw new JinjaException($"the test '{name}' is not supported", 0) { Kind = JinjaErrorKind.Unsupported };
        }
    }
}
