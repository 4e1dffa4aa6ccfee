using System.Globalization;

namespace MoeServer.Tools;

/// <summary>--name value / --flag arguments of one tool command, with errors that name the option.</summary>
internal sealed class CommandLine
{
    private readonly Dictionary<string, string?> _options = new(StringComparer.Ordinal);
    private readonly HashSet<string> _used = new(StringComparer.Ordinal);

    public CommandLine(IEnumerable<string> args, IReadOnlySet<string> flags)
    {
        var list = args.ToList();
        for (int i = 0; i < list.Count; i++)
        {
            string a = list[i];
            if (!a.StartsWith("--", StringComparison.Ordinal))
                throw new UsageException($"unexpected argument '{a}'");
            string name = a[2..];
            string? value = null;
            int eq = name.IndexOf('=');
            if (eq >= 0)
            {
                value = name[(eq + 1)..];
                name = name[..eq];
            }
            else if (!flags.Contains(name))
            {
                if (i + 1 >= list.Count) throw new UsageException($"option --{name} needs a value");
                value = list[++i];
            }
            _options[name] = value;
        }
    }

    public bool Flag(string name)
    {
        _used.Add(name);
        return _options.ContainsKey(name);
    }

    public string? String(string name)
    {
        _used.Add(name);
        return _options.TryGetValue(name, out var v) ? v : null;
    }

    public string Required(string name) => String(name) ?? throw new UsageException($"missing required option --{name}");

    public int Int(string name, int fallback)
    {
        var s = String(name);
        if (s is null) return fallback;
        return int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v)
            ? v : throw new UsageException($"--{name} must be an integer, got '{s}'");
    }

    public long Long(string name, long fallback)
    {
        var s = String(name);
        if (s is null) return fallback;
        return long.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out long v)
            ? v : throw new UsageException($"--{name} must be an integer, got '{s}'");
    }

    public double Double(string name, double fallback)
    {
        var s = String(name);
        if (s is null) return fallback;
        return double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out double v)
            ? v : throw new UsageException($"--{name} must be a number, got '{s}'");
    }

    /// <summary>Fails on options the command did not read (typos should not pass silently).</summary>
    public void RejectUnknown()
    {
        var unknown = _options.Keys.Where(k => !_used.Contains(k)).ToList();
        if (unknown.Count > 0) throw new UsageException("unknown option(s): " + string.Join(", ", unknown.Select(u => "--" + u)));
    }
}

internal sealed class UsageException(string message) : Exception(message);
