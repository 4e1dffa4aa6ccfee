using System.Globalization;
using System.Text;

namespace MoeServer.Kernels.Jinja;

/// <summary>Python methods of str, list and dict that templates call (<c>s.strip()</c>, <c>d.items()</c>, ...).</summary>
internal static class Methods
{
    private static readonly HashSet<string> DictAttrs = new(StringComparer.Ordinal)
    {
        "clear", "copy", "fromkeys", "get", "items", "keys", "pop", "popitem", "setdefault", "update", "values",
    };

    private static readonly HashSet<string> DictUnsafe = new(StringComparer.Ordinal) { "clear", "pop", "popitem", "setdefault", "update" };

    private static readonly HashSet<string> ListUnsafe = new(StringComparer.Ordinal)
    {
        "append", "clear", "extend", "insert", "pop", "remove", "reverse", "sort",
    };

    /// <summary>Binds <paramref name="name"/> as a method of <paramref name="obj"/>; null when there is no such attribute.</summary>
    public static object? Bind(object? obj, string name)
    {
        switch (obj)
        {
            case string s:
                return BindString(s, name);
            case PyTuple t:
                return name switch
                {
                    "index" => Fn(name, a => (long)IndexOf(t, a)),
                    "count" => Fn(name, a => (long)t.Count(x => Py.Equals(x, Arg(a, 0, "value")))),
                    _ => null,
                };
            case List<object?> l:
                if (ListUnsafe.Contains(name) || name == "copy")
                {
                    return name == "copy" ? Fn(name, _ => new List<object?>(l)) : Unsafe(name, "list");
                }

                return name switch
                {
                    "index" => Fn(name, a => (long)IndexOf(l, a)),
                    "count" => Fn(name, a => (long)l.Count(x => Py.Equals(x, Arg(a, 0, "value")))),
                    _ => null,
                };
            case Dictionary<string, object?> d:
                if (!DictAttrs.Contains(name))
                {
                    return null;
                }

                if (DictUnsafe.Contains(name))
                {
                    return Unsafe(name, "dict");
                }

                return name switch
                {
                    "items" => Fn(name, _ => new PyIterable("dict_items", d.Select(kv => (object?)new PyTuple([kv.Key, kv.Value])).ToList(), sized: true)),
                    "keys" => Fn(name, _ => new PyIterable("dict_keys", d.Keys.Cast<object?>().ToList(), sized: true)),
                    "values" => Fn(name, _ => new PyIterable("dict_values", d.Values.ToList(), sized: true)),
                    "get" => Fn(name, a =>
                    {
                        object? key = Arg(a, 0, "key");
                        object? def = a.Positional.Count > 1 ? a.Positional[1] : null;
                        return key is string k && d.TryGetValue(k, out object? v) ? v : def;
                    }),
                    "copy" => Fn(name, _ => new Dictionary<string, object?>(d, StringComparer.Ordinal)),
                    _ => new Undefined($"the dict method '{name}' is not supported"),
                };
            default:
                return null;
        }
    }

    private static Undefined Unsafe(string name, string type) => new($"access to attribute '{name}' of '{type}' object is unsafe.");

    private static JinjaCallable Fn(string name, Func<CallArgs, object?> f) => new(name, f);

    private static object? Arg(CallArgs a, int i, string name, object? def = null, bool required = true)
    {
        if (i < a.Positional.Count)
        {
            return a.Positional[i];
        }

        foreach (KeyValuePair<string, object?> kv in a.Keyword)
        {
            if (kv.Key == name)
            {
                return kv.Value;
            }
        }

        if (required && def is null)
        {
            throw new JinjaRuntimeError($"missing required argument '{name}'");
        }

        return def;
    }

    private static object? OptArg(CallArgs a, int i, string name) => Arg(a, i, name, null, required: false);

    private static int IndexOf(List<object?> l, CallArgs a)
    {
        object? v = Arg(a, 0, "value");
        for (int i = 0; i < l.Count; i++)
        {
            if (Py.Equals(l[i], v))
            {
                return i;
            }
        }

        throw new JinjaRuntimeError($"{Py.Repr(v)} is not in list");
    }

    private static string Str(object? v, string what) => v as string ?? throw new JinjaRuntimeError($"{what} must be str, not {Py.TypeName(v)}");

    private static JinjaCallable? BindString(string s, string name) => name switch
    {
        "strip" => Fn(name, a => Strip(s, OptArg(a, 0, "chars"), true, true)),
        "lstrip" => Fn(name, a => Strip(s, OptArg(a, 0, "chars"), true, false)),
        "rstrip" => Fn(name, a => Strip(s, OptArg(a, 0, "chars"), false, true)),
        "upper" => Fn(name, _ => s.ToUpperInvariant()),
        "lower" => Fn(name, _ => s.ToLowerInvariant()),
        "title" => Fn(name, _ => PyTitle(s)),
        "capitalize" => Fn(name, _ => Capitalize(s)),
        "swapcase" => Fn(name, _ => string.Concat(s.Select(c => char.IsUpper(c) ? char.ToLowerInvariant(c) : char.ToUpperInvariant(c)))),
        "startswith" => Fn(name, a => Affix(s, Arg(a, 0, "prefix"), true)),
        "endswith" => Fn(name, a => Affix(s, Arg(a, 0, "suffix"), false)),
        "split" => Fn(name, a => Split(s, OptArg(a, 0, "sep"), OptArg(a, 1, "maxsplit") is { } m ? Py.ToLong(m) : -1, fromRight: false)),
        "rsplit" => Fn(name, a => Split(s, OptArg(a, 0, "sep"), OptArg(a, 1, "maxsplit") is { } m ? Py.ToLong(m) : -1, fromRight: true)),
        "splitlines" => Fn(name, a => SplitLines(s, Py.Truthy(OptArg(a, 0, "keepends"))).Cast<object?>().ToList()),
        "replace" => Fn(name, a => Replace(s, Str(Arg(a, 0, "old"), "replace() argument 1"), Str(Arg(a, 1, "new"), "replace() argument 2"), OptArg(a, 2, "count") is { } c ? Py.ToLong(c) : -1)),
        "find" => Fn(name, a => (long)s.IndexOf(Str(Arg(a, 0, "sub"), "find() argument"), StringComparison.Ordinal)),
        "rfind" => Fn(name, a => (long)s.LastIndexOf(Str(Arg(a, 0, "sub"), "rfind() argument"), StringComparison.Ordinal)),
        "index" => Fn(name, a =>
        {
            int i = s.IndexOf(Str(Arg(a, 0, "sub"), "index() argument"), StringComparison.Ordinal);
            return i < 0 ? throw new JinjaRuntimeError("substring not found") : (long)i;
        }),
        "count" => Fn(name, a => (long)CountOccurrences(s, Str(Arg(a, 0, "sub"), "count() argument"))),
        "join" => Fn(name, a => string.Join(s, Evaluator.Iterate(Arg(a, 0, "iterable")).Select(x => Str(x, "sequence item")))),
        "format" => Fn(name, a => StrFormat(s, a)),
        "isdigit" => Fn(name, _ => s.Length > 0 && s.All(char.IsDigit)),
        "isnumeric" => Fn(name, _ => s.Length > 0 && s.All(char.IsDigit)),
        "isalpha" => Fn(name, _ => s.Length > 0 && s.All(char.IsLetter)),
        "isalnum" => Fn(name, _ => s.Length > 0 && s.All(char.IsLetterOrDigit)),
        "isspace" => Fn(name, _ => s.Length > 0 && s.All(char.IsWhiteSpace)),
        "isupper" => Fn(name, _ => s.Any(char.IsLetter) && !s.Any(char.IsLower)),
        "islower" => Fn(name, _ => s.Any(char.IsLetter) && !s.Any(char.IsUpper)),
        "removeprefix" => Fn(name, a =>
        {
            string p = Str(Arg(a, 0, "prefix"), "removeprefix() argument");
            return s.StartsWith(p, StringComparison.Ordinal) ? s[p.Length..] : s;
        }),
        "removesuffix" => Fn(name, a =>
        {
            string p = Str(Arg(a, 0, "suffix"), "removesuffix() argument");
            return p.Length > 0 && s.EndsWith(p, StringComparison.Ordinal) ? s[..^p.Length] : s;
        }),
        "partition" => Fn(name, a =>
        {
            string sep = Str(Arg(a, 0, "sep"), "partition() argument");
            int i = s.IndexOf(sep, StringComparison.Ordinal);
            return i < 0 ? new PyTuple([s, string.Empty, string.Empty]) : new PyTuple([s[..i], sep, s[(i + sep.Length)..]]);
        }),
        "zfill" => Fn(name, a => s.PadLeft((int)Py.ToLong(Arg(a, 0, "width")), '0')),
        "center" or "ljust" or "rjust" or "encode" or "expandtabs" or "casefold" or "translate" or "maketrans" or "rpartition" or "rindex"
            or "isdecimal" or "isidentifier" or "isprintable" or "istitle" or "isascii" or "format_map"
            => Fn(name, _ => throw new JinjaException($"the string method '{name}' is not supported", 0) { Kind = JinjaErrorKind.Unsupported }),
        _ => null,
    };

    private static string PyWhitespace => " \t\n\r\v\f\x1c\x1d\x1e\x1f\x85\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000";

    public static string Strip(string s, object? chars, bool left, bool right)
    {
        char[] set = chars is null ? PyWhitespace.ToCharArray() : Str(chars, "strip arg").ToCharArray();
        if (left && right)
        {
            return s.Trim(set);
        }

        return left ? s.TrimStart(set) : s.TrimEnd(set);
    }

    private static bool Affix(string s, object? arg, bool prefix)
    {
        if (arg is List<object?> options and PyTuple)
        {
            return options.Any(o => Affix(s, o, prefix));
        }

        string a = arg as string ?? throw new JinjaRuntimeError($"{(prefix ? "startswith" : "endswith")} first arg must be str or a tuple of str, not {Py.TypeName(arg)}");
        return prefix ? s.StartsWith(a, StringComparison.Ordinal) : s.EndsWith(a, StringComparison.Ordinal);
    }

    private static int CountOccurrences(string s, string sub)
    {
        if (sub.Length == 0)
        {
            return Py.CodePointLength(s) + 1;
        }

        int n = 0;
        for (int i = s.IndexOf(sub, StringComparison.Ordinal); i >= 0; i = s.IndexOf(sub, i + sub.Length, StringComparison.Ordinal))
        {
            n++;
        }

        return n;
    }

    public static string Replace(string s, string old, string @new, long count)
    {
        if (count < 0)
        {
            if (old.Length == 0)
            {
                var sb0 = new StringBuilder(@new);
                foreach (string cp in Py.CodePoints(s))
                {
                    sb0.Append(cp).Append(@new);
                }

                return sb0.ToString();
            }

            return s.Replace(old, @new, StringComparison.Ordinal);
        }

        var sb = new StringBuilder();
        int pos = 0;
        for (long k = 0; k < count; k++)
        {
            int i = s.IndexOf(old, pos, StringComparison.Ordinal);
            if (i < 0 || (old.Length == 0 && i >= s.Length))
            {
                break;
            }

            sb.Append(s, pos, i - pos).Append(@new);
            if (old.Length == 0)
            {
                sb.Append(s[i]);
                pos = i + 1;
            }
            else
            {
                pos = i + old.Length;
            }
        }

        sb.Append(s, pos, s.Length - pos);
        return sb.ToString();
    }

    private static List<object?> Split(string s, object? sepArg, long maxSplit, bool fromRight)
    {
        var parts = new List<string>();
        if (sepArg is null)
        {
            // Whitespace split: runs of whitespace, no empty strings.
            char[] ws = PyWhitespace.ToCharArray();
            string rest = fromRight ? s.TrimEnd(ws) : s.TrimStart(ws);
            while (rest.Length > 0)
            {
                if (maxSplit >= 0 && parts.Count == maxSplit)
                {
                    parts.Add(rest);
                    break;
                }

                if (fromRight)
                {
                    int i = rest.LastIndexOfAny(ws);
                    if (i < 0)
                    {
                        parts.Add(rest);
                        break;
                    }

                    parts.Add(rest[(i + 1)..]);
                    rest = rest[..i].TrimEnd(ws);
                }
                else
                {
                    int i = rest.IndexOfAny(ws);
                    if (i < 0)
                    {
                        parts.Add(rest);
                        break;
                    }

                    parts.Add(rest[..i]);
                    rest = rest[i..].TrimStart(ws);
                }
            }

            if (fromRight)
            {
                parts.Reverse();
            }

            return parts.Cast<object?>().ToList();
        }

        string sep = Str(sepArg, "split separator");
        if (sep.Length == 0)
        {
            throw new JinjaRuntimeError("empty separator");
        }

        if (!fromRight)
        {
            int pos = 0;
            while (true)
            {
                int i = maxSplit >= 0 && parts.Count == maxSplit ? -1 : s.IndexOf(sep, pos, StringComparison.Ordinal);
                if (i < 0)
                {
                    parts.Add(s[pos..]);
                    break;
                }

                parts.Add(s[pos..i]);
                pos = i + sep.Length;
            }
        }
        else
        {
            int end = s.Length;
            while (true)
            {
                int i = maxSplit >= 0 && parts.Count == maxSplit ? -1 : (end - sep.Length < 0 ? -1 : s.LastIndexOf(sep, end - 1, end, StringComparison.Ordinal));
                if (i < 0)
                {
                    parts.Add(s[..end]);
                    break;
                }

                parts.Add(s[(i + sep.Length)..end]);
                end = i;
            }

            parts.Reverse();
        }

        return parts.Cast<object?>().ToList();
    }

    /// <summary>Python's str.splitlines.</summary>
    public static List<string> SplitLines(string s, bool keepEnds)
    {
        var lines = new List<string>();
        int start = 0;
        int i = 0;
        while (i < s.Length)
        {
            char c = s[i];
            int eol;
            if (c == '\r' && i + 1 < s.Length && s[i + 1] == '\n')
            {
                eol = 2;
            }
            else if (c is '\n' or '\r' or '\v' or '\f' or '\x1c' or '\x1d' or '\x1e' or '\x85' or '\u2028' or '\u2029')
            {
                eol = 1;
            }
            else
            {
                i++;
                continue;
            }

            lines.Add(keepEnds ? s[start..(i + eol)] : s[start..i]);
            i += eol;
            start = i;
        }

        if (start < s.Length)
        {
            lines.Add(s[start..]);
        }

        return lines;
    }

    /// <summary>Python's str.title(): a cased character after an uncased one is upper-cased, others lower-cased.</summary>
    private static string PyTitle(string s)
    {
        var sb = new StringBuilder(s.Length);
        bool prevCased = false;
        foreach (char c in s)
        {
            bool cased = char.IsUpper(c) || char.IsLower(c);
            sb.Append(cased ? (prevCased ? char.ToLowerInvariant(c) : char.ToUpperInvariant(c)) : c);
            prevCased = cased;
        }

        return sb.ToString();
    }

    public static string Capitalize(string s) => s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant();

    /// <summary>Python str.format with automatic/explicit/named fields and no format specs.</summary>
    private static string StrFormat(string fmt, CallArgs a)
    {
        var sb = new StringBuilder();
        int auto = 0;
        for (int i = 0; i < fmt.Length; i++)
        {
            char c = fmt[i];
            if (c == '{')
            {
                if (i + 1 < fmt.Length && fmt[i + 1] == '{')
                {
                    sb.Append('{');
                    i++;
                    continue;
                }

                int close = fmt.IndexOf('}', i);
                if (close < 0)
                {
                    throw new JinjaRuntimeError("Single '{' encountered in format string");
                }

                string field = fmt[(i + 1)..close];
                if (field.Contains(':', StringComparison.Ordinal) || field.Contains('!', StringComparison.Ordinal))
                {
                    throw new JinjaException($"str.format field '{{{field}}}' with a conversion or format spec is not supported", 0) { Kind = JinjaErrorKind.Unsupported };
                }

                object? v;
                if (field.Length == 0)
                {
                    v = auto < a.Positional.Count ? a.Positional[auto++] : throw new JinjaRuntimeError("Replacement index out of range for positional args tuple");
                }
                else if (int.TryParse(field, NumberStyles.None, CultureInfo.InvariantCulture, out int idx))
                {
                    v = idx < a.Positional.Count ? a.Positional[idx] : throw new JinjaRuntimeError("Replacement index out of range for positional args tuple");
                }
                else
                {
                    v = a.Keyword.FirstOrDefault(kv => kv.Key == field) is { Key: not null } kv ? kv.Value : throw new JinjaRuntimeError($"KeyError: '{field}'");
                }

                sb.Append(Py.Str(v));
                i = close;
            }
            else if (c == '}')
            {
                if (i + 1 < fmt.Length && fmt[i + 1] == '}')
                {
                    i++;
                }

                sb.Append('}');
            }
            else
            {
                sb.Append(c);
            }
        }

        return sb.ToString();
    }

    /// <summary>Python's printf-style <c>fmt % args</c> for %s, %r, %d, %i, %f (with precision) and %%.</summary>
    public static string PercentFormat(string fmt, object? args)
    {
        List<object?> values = args is PyTuple t ? t : [args];
        var sb = new StringBuilder();
        int k = 0;
        for (int i = 0; i < fmt.Length; i++)
        {
            if (fmt[i] != '%')
            {
                sb.Append(fmt[i]);
                continue;
            }

            if (++i >= fmt.Length)
            {
                throw new JinjaRuntimeError("incomplete format");
            }

            int? precision = null;
            if (fmt[i] == '.')
            {
                int s = ++i;
                while (i < fmt.Length && char.IsAsciiDigit(fmt[i]))
                {
                    i++;
                }

                precision = int.Parse(fmt[s..i], CultureInfo.InvariantCulture);
            }

            char conv = fmt[i];
            if (conv == '%')
            {
                sb.Append('%');
                continue;
            }

            if (k >= values.Count)
            {
                throw new JinjaRuntimeError("not enough arguments for format string");
            }

            object? v = values[k++];
            switch (conv)
            {
                case 's': sb.Append(Py.Str(v)); break;
                case 'r': sb.Append(Py.Repr(v)); break;
                case 'd' or 'i':
                    sb.Append(v is double d ? ((long)Math.Truncate(d)).ToString(CultureInfo.InvariantCulture) : Py.ToLong(v).ToString(CultureInfo.InvariantCulture));
                    break;
                case 'f':
                    sb.Append(Py.ToDouble(v).ToString("F" + (precision ?? 6).ToString(CultureInfo.InvariantCulture), CultureInfo.InvariantCulture));
                    break;
                default:
                    throw new JinjaException($"the printf conversion '%{conv}' is not supported", 0) { Kind = JinjaErrorKind.Unsupported };
            }
        }

        // Python skips the check when the argument could be a mapping (anything with __getitem__ but a tuple or str).
        if (k < values.Count && !(k == 0 && args is List<object?> or Dictionary<string, object?> or Undefined && args is not PyTuple))
        {
            throw new JinjaRuntimeError("not all arguments converted during string formatting");
        }

        return sb.ToString();
    }
}
