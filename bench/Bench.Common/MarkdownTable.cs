using System.Globalization;
using System.Text;

namespace MoeServer.Bench.Common;

/// <summary>
/// Builds a GitHub-flavoured markdown table from string cells. Columns whose non-blank cells are all
/// numeric (optionally with a unit suffix such as %, x, ms, GB/s, tok/s) are right aligned; cells are
/// padded so the raw markdown reads as a table too. '|' in a cell is escaped.
/// </summary>
/// <example>
/// var t = new MarkdownTable("workload", "tok/s", "vs peak");
/// t.AddRow("decode b=1", "21.5", "82%");
/// File.WriteAllText("bench/results/x.md", t.ToString());
/// </example>
public sealed class MarkdownTable
{
    private readonly string[] _headers;
    private readonly List<string[]> _rows = [];

    public MarkdownTable(params string[] headers)
    {
        ArgumentNullException.ThrowIfNull(headers);
        if (headers.Length == 0) throw new ArgumentException("a table needs at least one column", nameof(headers));
        _headers = [.. headers];
    }

    public IReadOnlyList<string> Headers => _headers;
    public int RowCount => _rows.Count;

    /// <summary>Adds a row; short rows are padded with blank cells, long rows are an error.</summary>
    public MarkdownTable AddRow(params string[] cells)
    {
        ArgumentNullException.ThrowIfNull(cells);
        if (cells.Length > _headers.Length)
            throw new ArgumentException($"row has {cells.Length} cells for {_headers.Length} columns", nameof(cells));
        var row = new string[_headers.Length];
        for (int i = 0; i < row.Length; i++) row[i] = i < cells.Length ? cells[i] ?? "" : "";
        _rows.Add(row);
        return this;
    }

    public override string ToString() => Render(_headers, _rows);

    /// <summary>Renders headers + rows to markdown (ending in a newline).</summary>
    public static string Render(IReadOnlyList<string> headers, IEnumerable<IReadOnlyList<string>> rows)
    {
        ArgumentNullException.ThrowIfNull(headers);
        ArgumentNullException.ThrowIfNull(rows);
        int cols = headers.Count;
        var h = headers.Select(Escape).ToArray();
        var body = rows.Select(r =>
        {
            if (r.Count > cols) throw new ArgumentException($"row has {r.Count} cells for {cols} columns", nameof(rows));
            var cells = new string[cols];
            for (int i = 0; i < cols; i++) cells[i] = i < r.Count ? Escape(r[i] ?? "") : "";
            return cells;
        }).ToList();

        var right = new bool[cols];
        var width = new int[cols];
        for (int c = 0; c < cols; c++)
        {
            bool anyNumber = false, allNumber = true;
            width[c] = Math.Max(3, h[c].Length);
            foreach (var row in body)
            {
                width[c] = Math.Max(width[c], row[c].Length);
                if (IsBlank(row[c])) continue;
                if (IsNumeric(row[c])) anyNumber = true; else allNumber = false;
            }
            right[c] = anyNumber && allNumber;
        }

        var sb = new StringBuilder();
        AppendRow(sb, h, width, right);
        sb.Append('|');
        for (int c = 0; c < cols; c++)
        {
            sb.Append(' ');
            sb.Append(right[c] ? new string('-', width[c] - 1) + ":" : new string('-', width[c]));
            sb.Append(" |");
        }
        sb.Append('\n');
        foreach (var row in body) AppendRow(sb, row, width, right);
        return sb.ToString();
    }

    private static void AppendRow(StringBuilder sb, string[] cells, int[] width, bool[] right)
    {
        sb.Append('|');
        for (int c = 0; c < cells.Length; c++)
        {
            sb.Append(' ');
            sb.Append(right[c] ? cells[c].PadLeft(width[c]) : cells[c].PadRight(width[c]));
            sb.Append(" |");
        }
        sb.Append('\n');
    }

    private static string Escape(string s) =>
        s.Replace("\r\n", " ").Replace('\n', ' ').Replace("|", "\\|");

    private static bool IsBlank(string s)
    {
        var t = s.Trim();
        return t.Length == 0 || t is "-" or "—" or "n/a" or "N/A" or "na";
    }

    private static readonly string[] UnitSuffixes =
        ["%", "×", "x", "ms", "us", "µs", "ns", "s", "GB/s", "GiB/s", "MB/s", "tok/s", "GFLOP/s", "TFLOP/s", "GB", "GiB", "MB", "MiB"];

    /// <summary>True for "1,234.5", "-3e-4", "82%", "1.7x", "12 ms", "**0.91**" and the like.</summary>
    public static bool IsNumeric(string cell)
    {
        ArgumentNullException.ThrowIfNull(cell);
        var s = cell.Trim().Trim('*', '_', '`').Trim();
        if (s.StartsWith('~') || s.StartsWith('≈')) s = s[1..];
        if (s.StartsWith('+')) s = s[1..];
        foreach (var u in UnitSuffixes.OrderByDescending(u => u.Length))
        {
            if (s.EndsWith(u, StringComparison.Ordinal)) { s = s[..^u.Length].TrimEnd(); break; }
        }
        return s.Length > 0 && double.TryParse(s, NumberStyles.Float | NumberStyles.AllowThousands, CultureInfo.InvariantCulture, out _);
    }
}
