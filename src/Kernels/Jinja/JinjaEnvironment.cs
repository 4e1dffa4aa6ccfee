using System.Collections;
using System.Globalization;
using System.Text;
using System.Text.Json;

namespace MoeServer.Kernels.Jinja;

/// <summary>
/// The globals transformers gives chat templates (<c>raise_exception</c>, <c>strftime_now</c>) plus jinja2's own
/// (<c>range</c>, <c>namespace</c>, <c>dict</c>).
/// </summary>
internal sealed class JinjaEnvironment
{
    private static readonly string[] Months =
        ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];

    private static readonly string[] Days = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];

    public JinjaEnvironment(Func<DateTime> now)
    {
        Globals = new Dictionary<string, object?>(StringComparer.Ordinal)
        {
            ["raise_exception"] = new JinjaCallable("raise_exception", a =>
                throw new JinjaException(Py.Str(a.Positional.Count > 0 ? a.Positional[0] : a.Keyword.FirstOrDefault().Value)) { Kind = JinjaErrorKind.Raised }),
            ["strftime_now"] = new JinjaCallable("strftime_now", a => Strftime(now(), Py.Str(a.Positional.Count > 0 ? a.Positional[0] : a.Keyword.FirstOrDefault().Value))),
            ["range"] = new JinjaCallable("range", Range),
            ["namespace"] = new JinjaCallable("namespace", a =>
            {
                var ns = new JinjaNamespace();
                foreach (object? p in a.Positional)
                {
                    if (p is not Dictionary<string, object?> d)
                    {
                        throw new JinjaRuntimeError("namespace() takes keyword arguments or a dict");
                    }

                    foreach (KeyValuePair<string, object?> kv in d)
                    {
                        ns.Attributes[kv.Key] = kv.Value;
                    }
                }

                foreach (KeyValuePair<string, object?> kv in a.Keyword)
                {
                    ns.Attributes[kv.Key] = kv.Value;
                }

                return ns;
            }),
            ["dict"] = new JinjaCallable("dict", a =>
            {
                var d = new Dictionary<string, object?>(StringComparer.Ordinal);
                foreach (object? p in a.Positional)
                {
                    if (p is Dictionary<string, object?> src)
                    {
                        foreach (KeyValuePair<string, object?> kv in src)
                        {
                            d[kv.Key] = kv.Value;
                        }
                    }
                    else
                    {
                        throw new JinjaRuntimeError("dict() positional argument must be a dict");
                    }
                }

                foreach (KeyValuePair<string, object?> kv in a.Keyword)
                {
                    d[kv.Key] = kv.Value;
                }

                return d;
            }),
        };
    }

    public Dictionary<string, object?> Globals { get; }

    private static List<object?> Range(CallArgs a)
    {
        if (a.Keyword.Count > 0 || a.Positional.Count is 0 or > 3)
        {
            throw new JinjaRuntimeError("range expected 1 to 3 integer arguments");
        }

        long start = 0, stop, step = 1;
        if (a.Positional.Count == 1)
        {
            stop = Py.ToLong(a.Positional[0]);
        }
        else
        {
            start = Py.ToLong(a.Positional[0]);
            stop = Py.ToLong(a.Positional[1]);
            if (a.Positional.Count == 3)
            {
                step = Py.ToLong(a.Positional[2]);
            }
        }

        if (step == 0)
        {
            throw new JinjaRuntimeError("range() arg 3 must not be zero");
        }

        var r = new List<object?>();
        for (long i = start; step > 0 ? i < stop : i > stop; i += step)
        {
            if (r.Count >= 100_000)
            {
                throw new JinjaRuntimeError("Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
            }

            r.Add(i);
        }

        return r;
    }

    /// <summary>Python's datetime.strftime for the codes chat templates use (glibc's %-d style included).</summary>
    public static string Strftime(DateTime t, string format)
    {
        var sb = new StringBuilder();
        for (int i = 0; i < format.Length; i++)
        {
            char c = format[i];
            if (c != '%' || i + 1 >= format.Length)
            {
                sb.Append(c);
                continue;
            }

            char f = format[++i];
            bool noPad = false;
            if (f == '-' && i + 1 < format.Length)
            {
                noPad = true;
                f = format[++i];
            }

            string Num(int v, int width) => noPad ? v.ToString(CultureInfo.InvariantCulture) : v.ToString(new string('0', width), CultureInfo.InvariantCulture);
            int hour12 = t.Hour % 12 == 0 ? 12 : t.Hour % 12;
            sb.Append(f switch
            {
                'Y' => t.Year.ToString(CultureInfo.InvariantCulture),
                'y' => Num(t.Year % 100, 2),
                'm' => Num(t.Month, 2),
                'd' => Num(t.Day, 2),
                'e' => t.Day.ToString(CultureInfo.InvariantCulture).PadLeft(2),
                'H' => Num(t.Hour, 2),
                'I' => Num(hour12, 2),
                'M' => Num(t.Minute, 2),
                'S' => Num(t.Second, 2),
                'f' => (t.Ticks % TimeSpan.TicksPerSecond / 10).ToString("000000", CultureInfo.InvariantCulture),
                'j' => Num(t.DayOfYear, 3),
                'p' => t.Hour < 12 ? "AM" : "PM",
                'B' => Months[t.Month - 1],
                'b' or 'h' => Months[t.Month - 1][..3],
                'A' => Days[(int)t.DayOfWeek],
                'a' => Days[(int)t.DayOfWeek][..3],
                'w' => ((int)t.DayOfWeek).ToString(CultureInfo.InvariantCulture),
                'u' => (t.DayOfWeek == DayOfWeek.Sunday ? 7 : (int)t.DayOfWeek).ToString(CultureInfo.InvariantCulture),
                'F' => t.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture),
                'T' => t.ToString("HH:mm:ss", CultureInfo.InvariantCulture),
                'D' => t.ToString("MM/dd/yy", CultureInfo.InvariantCulture),
                'R' => t.ToString("HH:mm", CultureInfo.InvariantCulture),
                'Z' => string.Empty,
                'z' => string.Empty,
                '%' => "%",
                _ => throw new JinjaException($"strftime code '%{f}' is not supported", 0) { Kind = JinjaErrorKind.Unsupported },
            });
        }

        return sb.ToString();
    }

    /// <summary>Converts a .NET value into the interpreter's values (strings, long, double, bool, lists, ordered dicts).</summary>
    public static object? Import(object? v) => v switch
    {
        null => null,
        string or bool or long or double => v,
        int i => (long)i,
        short s => (long)s,
        byte b => (long)b,
        float f => (double)f,
        decimal m => (double)m,
        JsonElement e => Py.FromJson(e),
        JsonDocument doc => Py.FromJson(doc.RootElement),
        IDictionary<string, object?> d => d.ToDictionary(kv => kv.Key, kv => Import(kv.Value), StringComparer.Ordinal),
        IReadOnlyDictionary<string, object?> d => d.ToDictionary(kv => kv.Key, kv => Import(kv.Value), StringComparer.Ordinal),
        IDictionary d => ImportDictionary(d),
        IEnumerable e => e.Cast<object?>().Select(Import).ToList(),
        _ => throw new ArgumentException($"a value of type {v.GetType().Name} cannot be passed to a template"),
    };

    private static Dictionary<string, object?> ImportDictionary(IDictionary d)
    {
        var r = new Dictionary<string, object?>(StringComparer.Ordinal);
        foreach (DictionaryEntry kv in d)
        {
            r[kv.Key as string ?? throw new ArgumentException("template dict keys must be strings")] = Import(kv.Value);
        }

        return r;
    }
}
