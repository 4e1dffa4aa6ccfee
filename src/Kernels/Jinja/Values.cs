using System.Globalization;
using System.Text;
using System.Text.Json;

namespace MoeServer.Kernels.Jinja;

/// <summary>
/// jinja2's default Undefined: renders empty, is falsy, iterates as empty, has length 0; using it in arithmetic,
/// reading an attribute or item of it, or calling it raises (an <c>UndefinedError</c> in jinja2).
/// </summary>
internal sealed class Undefined
{
    public Undefined(string hint) => Hint = hint;

    /// <summary>jinja2's message when this value is used: "'x' is undefined" or "'dict object' has no attribute 'y'".</summary>
    public string Hint { get; }

    public static Undefined Named(string name) => new($"'{name}' is undefined");

    public override string ToString() => string.Empty;
}

/// <summary>A Python tuple (from <c>(a, b)</c>, <c>items()</c>, <c>a, b</c>): a read-only list that renders with parentheses.</summary>
internal sealed class PyTuple : List<object?>
{
    public PyTuple()
    {
    }

    public PyTuple(IEnumerable<object?> items)
        : base(items)
    {
    }
}

/// <summary>
/// A Python iterator or view that is not a list: the generators jinja2's <c>map</c>, <c>select</c>, <c>unique</c>,
/// <c>items</c> filters return and <c>reversed()</c> (unsized: always truthy, no len(), no indexing), or a dict's
/// <c>keys()</c>/<c>values()</c>/<c>items()</c> view (sized). Templates turn them into lists with <c>| list</c>.
/// </summary>
internal sealed class PyIterable
{
    public PyIterable(string kind, List<object?> items, bool sized)
    {
        Kind = kind;
        _items = items;
        Sized = sized;
    }

    private PyIterable(string error)
    {
        Kind = "generator";
        _items = [];
        _error = error;
    }

    private readonly List<object?> _items;
    private readonly string? _error;

    public string Kind { get; }

    /// <summary>The items; a generator whose computation failed raises here, when it is consumed (as in Python).</summary>
    public List<object?> Items => _error is null ? _items : throw new JinjaRuntimeError(_error);

    public bool Sized { get; }

    public override string ToString() => Sized ? $"{Kind}({Py.Repr(Items)})" : $"<{Kind} object>";

    /// <summary>A generator over <paramref name="compute"/>'s items; an error computing them surfaces only when it is consumed.</summary>
    public static PyIterable Lazy(Func<List<object?>> compute)
    {
        try
        {
            return new PyIterable("generator", compute(), sized: false);
        }
        catch (JinjaRuntimeError e)
        {
            return new PyIterable(e.Message);
        }
    }
}

/// <summary>jinja2's <c>namespace(...)</c>: the one object a template may assign attributes to.</summary>
internal sealed class JinjaNamespace
{
    public Dictionary<string, object?> Attributes { get; } = new(StringComparer.Ordinal);
}

/// <summary>Arguments of a call: positional then keyword.</summary>
internal sealed record CallArgs(List<object?> Positional, List<KeyValuePair<string, object?>> Keyword);

/// <summary>A callable value: a global function, a bound method, a macro or caller.</summary>
internal sealed class JinjaCallable
{
    public JinjaCallable(string name, Func<CallArgs, object?> invoke)
    {
        Name = name;
        Invoke = invoke;
    }

    public string Name { get; }

    public Func<CallArgs, object?> Invoke { get; }

    public override string ToString() => $"<function {Name}>";
}

/// <summary>Python value semantics for the interpreter's values: str(), repr(), truthiness, ==, ordering, json.dumps.</summary>
internal static class Py
{
    public static string TypeName(object? v) => v switch
    {
        null => "NoneType",
        Undefined => "Undefined",
        bool => "bool",
        long => "int",
        double => "float",
        string => "str",
        PyTuple => "tuple",
        List<object?> => "list",
        Dictionary<string, object?> => "dict",
        JinjaNamespace => "Namespace",
        JinjaCallable => "function",
        LoopContext => "LoopContext",
        PyIterable it => it.Kind,
        _ => v.GetType().Name,
    };

    public static bool Truthy(object? v) => v switch
    {
        null => false,
        Undefined => false,
        bool b => b,
        long l => l != 0,
        double d => d != 0,
        string s => s.Length > 0,
        List<object?> l => l.Count > 0,
        Dictionary<string, object?> d => d.Count > 0,
        PyIterable { Sized: true } it => it.Items.Count > 0,
        _ => true,
    };

    /// <summary>Python's str(): what <c>{{ v }}</c> renders.</summary>
    public static string Str(object? v) => v switch
    {
        null => "None",
        Undefined => string.Empty,
        string s => s,
        bool b => b ? "True" : "False",
        long l => l.ToString(CultureInfo.InvariantCulture),
        double d => FormatFloat(d),
        _ => Repr(v),
    };

    /// <summary>Python's repr().</summary>
    public static string Repr(object? v)
    {
        var sb = new StringBuilder();
        AppendRepr(sb, v);
        return sb.ToString();
    }

    private static void AppendRepr(StringBuilder sb, object? v)
    {
        switch (v)
        {
            case string s:
                AppendStringRepr(sb, s);
                break;
            case PyTuple t:
                sb.Append('(');
                for (int i = 0; i < t.Count; i++)
                {
                    if (i > 0)
                    {
                        sb.Append(", ");
                    }

                    AppendRepr(sb, t[i]);
                }

                sb.Append(t.Count == 1 ? ",)" : ")");
                break;
            case List<object?> l:
                sb.Append('[');
                for (int i = 0; i < l.Count; i++)
                {
                    if (i > 0)
                    {
                        sb.Append(", ");
                    }

                    AppendRepr(sb, l[i]);
                }

                sb.Append(']');
                break;
            case Dictionary<string, object?> d:
                sb.Append('{');
                bool first = true;
                foreach (KeyValuePair<string, object?> kv in d)
                {
                    if (!first)
                    {
                        sb.Append(", ");
                    }

                    first = false;
                    AppendStringRepr(sb, kv.Key);
                    sb.Append(": ");
                    AppendRepr(sb, kv.Value);
                }

                sb.Append('}');
                break;
            case JinjaNamespace ns:
                sb.Append("<Namespace ");
                AppendRepr(sb, ns.Attributes);
                sb.Append('>');
                break;
            case Undefined:
                sb.Append("Undefined");
                break;
            default:
                sb.Append(v is string or null or bool or long or double ? Str(v) : v.ToString());
                break;
        }
    }

    private static void AppendStringRepr(StringBuilder sb, string s)
    {
        char q = s.Contains('\'', StringComparison.Ordinal) && !s.Contains('"', StringComparison.Ordinal) ? '"' : '\'';
        sb.Append(q);
        foreach (char c in s)
        {
            switch (c)
            {
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                default:
                    if (c == q)
                    {
                        sb.Append('\\').Append(c);
                    }
                    else if (c < 0x20 || c == 0x7f)
                    {
                        sb.Append("\\x").Append(((int)c).ToString("x2", CultureInfo.InvariantCulture));
                    }
                    else
                    {
                        sb.Append(c);
                    }

                    break;
            }
        }

        sb.Append(q);
    }

    /// <summary>Python's repr() of a float: shortest round-trip digits, exponent form below 1e-4 and from 1e16.</summary>
    public static string FormatFloat(double d)
    {
        if (double.IsNaN(d))
        {
            return "nan";
        }

        if (double.IsInfinity(d))
        {
            return d > 0 ? "inf" : "-inf";
        }

        if (d == 0)
        {
            return double.IsNegative(d) ? "-0.0" : "0.0";
        }

        string shortest = Math.Abs(d).ToString("R", CultureInfo.InvariantCulture);

        // Digits and decimal exponent from the shortest round-trip form.
        string mant = shortest;
        int exp10 = 0;
        int e = shortest.IndexOfAny(['E', 'e']);
        if (e >= 0)
        {
            mant = shortest[..e];
            exp10 = int.Parse(shortest[(e + 1)..], CultureInfo.InvariantCulture);
        }

        int dot = mant.IndexOf('.', StringComparison.Ordinal);
        string intPart = dot >= 0 ? mant[..dot] : mant;
        string fracPart = dot >= 0 ? mant[(dot + 1)..] : string.Empty;
        string digits = (intPart + fracPart).TrimStart('0');
        int leadingZeros = (intPart + fracPart).Length - digits.Length;
        int pointPos = intPart.Length - leadingZeros + exp10; // value = 0.digits * 10^pointPos
        digits = digits.TrimEnd('0');
        if (digits.Length == 0)
        {
            digits = "0";
        }

        int sciExp = pointPos - 1;
        var sb = new StringBuilder();
        if (d < 0)
        {
            sb.Append('-');
        }

        if (sciExp < -4 || sciExp >= 16)
        {
            sb.Append(digits[0]);
            if (digits.Length > 1)
            {
                sb.Append('.').Append(digits, 1, digits.Length - 1);
            }

            sb.Append('e').Append(sciExp < 0 ? '-' : '+').Append(Math.Abs(sciExp).ToString("00", CultureInfo.InvariantCulture));
        }
        else if (pointPos <= 0)
        {
            sb.Append("0.").Append('0', -pointPos).Append(digits);
        }
        else if (pointPos >= digits.Length)
        {
            sb.Append(digits).Append('0', pointPos - digits.Length).Append(".0");
        }
        else
        {
            sb.Append(digits, 0, pointPos).Append('.').Append(digits, pointPos, digits.Length - pointPos);
        }

        return sb.ToString();
    }

    public static bool IsNumber(object? v) => v is long or double or bool;

    public static double ToDouble(object? v) => v switch
    {
        long l => l,
        double d => d,
        bool b => b ? 1 : 0,
        _ => throw new InvalidOperationException("not a number"),
    };

    /// <summary>Python ==.</summary>
    public static new bool Equals(object? a, object? b)
    {
        if (a is Undefined || b is Undefined)
        {
            return a is Undefined && b is Undefined;
        }

        if (a is null || b is null)
        {
            return a is null && b is null;
        }

        if (IsNumber(a) && IsNumber(b))
        {
            if (a is double || b is double)
            {
                return ToDouble(a) == ToDouble(b);
            }

            return ToLong(a) == ToLong(b);
        }

        switch (a)
        {
            case string sa:
                return b is string sb && string.Equals(sa, sb, StringComparison.Ordinal);
            case List<object?> la:
                if (b is not List<object?> lb || (a is PyTuple) != (b is PyTuple) || la.Count != lb.Count)
                {
                    return false;
                }

                for (int i = 0; i < la.Count; i++)
                {
                    if (!Equals(la[i], lb[i]))
                    {
                        return false;
                    }
                }

                return true;
            case Dictionary<string, object?> da:
                if (b is not Dictionary<string, object?> db || da.Count != db.Count)
                {
                    return false;
                }

                foreach (KeyValuePair<string, object?> kv in da)
                {
                    if (!db.TryGetValue(kv.Key, out object? o) || !Equals(kv.Value, o))
                    {
                        return false;
                    }
                }

                return true;
            default:
                return ReferenceEquals(a, b);
        }
    }

    public static long ToLong(object? v) => v switch
    {
        long l => l,
        bool b => b ? 1 : 0,
        _ => throw new InvalidOperationException("not an int"),
    };

    /// <summary>Python ordering (&lt;): numbers, strings, lists/tuples; otherwise a TypeError.</summary>
    public static int Compare(object? a, object? b, string op)
    {
        if (IsNumber(a) && IsNumber(b))
        {
            return a is double || b is double ? ToDouble(a).CompareTo(ToDouble(b)) : ToLong(a).CompareTo(ToLong(b));
        }

        if (a is string sa && b is string sb)
        {
            return CompareCodePoints(sa, sb);
        }

        if (a is List<object?> la && b is List<object?> lb && (a is PyTuple) == (b is PyTuple))
        {
            for (int i = 0; i < Math.Min(la.Count, lb.Count); i++)
            {
                if (!Equals(la[i], lb[i]))
                {
                    return Compare(la[i], lb[i], op);
                }
            }

            return la.Count.CompareTo(lb.Count);
        }

        throw new JinjaRuntimeError($"'{op}' not supported between instances of '{TypeName(a)}' and '{TypeName(b)}'");
    }

    private static int CompareCodePoints(string a, string b)
    {
        int i = 0;
        int j = 0;
        while (i < a.Length && j < b.Length)
        {
            int ca = CodePointAt(a, i);
            int cb = CodePointAt(b, j);
            if (ca != cb)
            {
                return ca.CompareTo(cb);
            }

            i += ca > 0xFFFF ? 2 : 1;
            j += cb > 0xFFFF ? 2 : 1;
        }

        return (a.Length - i).CompareTo(b.Length - j);
    }

    private static int CodePointAt(string s, int i) =>
        char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]) ? char.ConvertToUtf32(s[i], s[i + 1]) : s[i];

    /// <summary>Python's len() of a string: code points.</summary>
    public static int CodePointLength(string s)
    {
        int n = 0;
        for (int i = 0; i < s.Length; i++)
        {
            if (!(char.IsLowSurrogate(s[i]) && i > 0 && char.IsHighSurrogate(s[i - 1])))
            {
                n++;
            }
        }

        return n;
    }

    /// <summary>A string split into code points (as strings), as Python indexes it.</summary>
    public static List<string> CodePoints(string s)
    {
        var list = new List<string>(s.Length);
        for (int i = 0; i < s.Length; i++)
        {
            if (char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]))
            {
                list.Add(s.Substring(i, 2));
                i++;
            }
            else
            {
                list.Add(s[i].ToString());
            }
        }

        return list;
    }

    /// <summary>Python json.dumps(v, ensure_ascii, indent, separators, sort_keys).</summary>
    public static string ToJson(object? v, bool ensureAscii, string? indent, string? itemSep, string? keySep, bool sortKeys)
    {
        itemSep ??= indent is null ? ", " : ",";
        keySep ??= ": ";
        var sb = new StringBuilder();
        WriteJson(sb, v, ensureAscii, indent, itemSep, keySep, sortKeys, 0);
        return sb.ToString();
    }

    private static void NewLine(StringBuilder sb, string? indent, int depth)
    {
        if (indent is null)
        {
            return;
        }

        sb.Append('\n');
        for (int i = 0; i < depth; i++)
        {
            sb.Append(indent);
        }
    }

    private static void WriteJson(StringBuilder sb, object? v, bool ascii, string? indent, string itemSep, string keySep, bool sortKeys, int depth)
    {
        switch (v)
        {
            case null:
                sb.Append("null");
                break;
            case bool b:
                sb.Append(b ? "true" : "false");
                break;
            case long l:
                sb.Append(l.ToString(CultureInfo.InvariantCulture));
                break;
            case double d:
                sb.Append(double.IsNaN(d) ? "NaN" : double.IsPositiveInfinity(d) ? "Infinity" : double.IsNegativeInfinity(d) ? "-Infinity" : FormatFloat(d));
                break;
            case string s:
                WriteJsonString(sb, s, ascii);
                break;
            case List<object?> list:
                if (list.Count == 0)
                {
                    sb.Append("[]");
                    break;
                }

                sb.Append('[');
                for (int i = 0; i < list.Count; i++)
                {
                    if (i > 0)
                    {
                        sb.Append(itemSep);
                    }

                    NewLine(sb, indent, depth + 1);
                    WriteJson(sb, list[i], ascii, indent, itemSep, keySep, sortKeys, depth + 1);
                }

                NewLine(sb, indent, depth);
                sb.Append(']');
                break;
            case Dictionary<string, object?> dict:
                if (dict.Count == 0)
                {
                    sb.Append("{}");
                    break;
                }

                sb.Append('{');
                IEnumerable<KeyValuePair<string, object?>> items = sortKeys ? dict.OrderBy(kv => kv.Key, StringComparer.Ordinal) : dict;
                bool first = true;
                foreach (KeyValuePair<string, object?> kv in items)
                {
                    if (!first)
                    {
                        sb.Append(itemSep);
                    }

                    first = false;
                    NewLine(sb, indent, depth + 1);
                    WriteJsonString(sb, kv.Key, ascii);
                    sb.Append(keySep);
                    WriteJson(sb, kv.Value, ascii, indent, itemSep, keySep, sortKeys, depth + 1);
                }

                NewLine(sb, indent, depth);
                sb.Append('}');
                break;
            default:
                throw new JinjaRuntimeError($"Object of type {TypeName(v)} is not JSON serializable");
        }
    }

    private static void WriteJsonString(StringBuilder sb, string s, bool ascii)
    {
        sb.Append('"');
        foreach (char c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                default:
                    if (c < 0x20 || (ascii && c > 0x7e))
                    {
                        sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                    }
                    else
                    {
                        sb.Append(c);
                    }

                    break;
            }
        }

        sb.Append('"');
    }

    /// <summary>A JSON value as the interpreter's values (Python's json.loads): objects keep their key order.</summary>
    public static object? FromJson(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.Null or JsonValueKind.Undefined => null,
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        JsonValueKind.String => Utf16(e, () => e.GetString()),
        JsonValueKind.Number => e.TryGetInt64(out long l) && !e.GetRawText().AsSpan().ContainsAny(".eE") ? (object)l : e.GetDouble(),
        JsonValueKind.Array => e.EnumerateArray().Select(FromJson).ToList(),
        JsonValueKind.Object => FromJsonObject(e),
        _ => throw new JinjaRuntimeError($"unsupported JSON value kind {e.ValueKind}"),
    };

    /// <summary>A string of the JSON (a value or a key); JSON may escape an unpaired surrogate ("\udc00"), which
    /// System.Text.Json refuses to turn into a string: the template's input is refused like any bad input.</summary>
    private static string? Utf16(JsonElement e, Func<string?> read)
    {
        try
        {
            return read();
        }
        catch (InvalidOperationException ex) when (e.ValueKind is JsonValueKind.String or JsonValueKind.Object)
        {
            throw new JinjaException($"a JSON value passed to the template is not valid text: {ex.Message}", 0) { Kind = JinjaErrorKind.Runtime };
        }
    }

    private static Dictionary<string, object?> FromJsonObject(JsonElement e)
    {
        var d = new Dictionary<string, object?>(StringComparer.Ordinal);
        foreach (JsonProperty p in e.EnumerateObject())
        {
            d[Utf16(e, () => p.Name)!] = FromJson(p.Value);
        }

        return d;
    }
}

/// <summary>A runtime error inside the evaluator; the evaluator adds the template line.</summary>
internal sealed class JinjaRuntimeError : Exception
{
    public JinjaRuntimeError()
    {
    }

    public JinjaRuntimeError(string message)
        : base(message)
    {
    }

    public JinjaRuntimeError(string message, Exception inner)
        : base(message, inner)
    {
    }
}
