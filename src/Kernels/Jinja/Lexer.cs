using System.Globalization;
using System.Text;

namespace MoeServer.Kernels.Jinja;

internal enum TokenKind
{
    Data,
    VarBegin,
    VarEnd,
    BlockBegin,
    BlockEnd,
    Name,
    String,
    Integer,
    Float,
    Operator,
    Eof,
}

internal readonly record struct Token(TokenKind Kind, string Value, int Line, object? Literal = null)
{
    public bool Is(TokenKind kind, string value) => Kind == kind && Value == value;

    public bool IsOp(string value) => Kind == TokenKind.Operator && Value == value;

    public bool IsName(string value) => Kind == TokenKind.Name && Value == value;

    public override string ToString() => Kind switch
    {
        TokenKind.Eof => "end of template",
        TokenKind.VarEnd => "'}}'",
        TokenKind.BlockEnd => "'%}'",
        TokenKind.Data => "template data",
        _ => $"'{Value}'",
    };
}

/// <summary>
/// Splits a template into tokens the way jinja2's lexer does under transformers' settings: trim_blocks (the first
/// newline after a block or comment tag is removed), lstrip_blocks (spaces and tabs before a block or comment tag at
/// the start of a line are removed), '-' / '+' whitespace control, no trailing newline kept.
/// </summary>
internal sealed class Lexer
{
    private static readonly string[] Operators =
        ["**", "//", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">", "=", "|", ".", ",", ":", "(", ")", "[", "]", "{", "}"];

    private readonly string _src;
    private readonly bool _trimBlocks;
    private readonly bool _lstripBlocks;
    private readonly List<Token> _tokens = [];
    private int _pos;
    private int _line = 1;

    public Lexer(string source, bool trimBlocks = true, bool lstripBlocks = true)
    {
        // keep_trailing_newline=False: one trailing newline of the source is dropped.
        if (source.EndsWith("\r\n", StringComparison.Ordinal))
        {
            source = source[..^2];
        }
        else if (source.EndsWith('\n'))
        {
            source = source[..^1];
        }

        _src = source;
        _trimBlocks = trimBlocks;
        _lstripBlocks = lstripBlocks;
    }

    public List<Token> Tokenize()
    {
        bool stripNextData = false;
        while (_pos < _src.Length)
        {
            int start = FindTagStart(_pos);
            int textEnd = start < 0 ? _src.Length : start;
            string text = _src[_pos..textEnd];
            int textLine = _line;
            bool lineStarting = _pos == 0 || _src[_pos - 1] == '\n';
            if (stripNextData)
            {
                text = text.TrimStart();
            }

            stripNextData = false;
            if (start < 0)
            {
                Emit(TokenKind.Data, text, textLine);
                Advance(textEnd);
                break;
            }

            char kind = _src[start + 1];
            char ctl = start + 2 < _src.Length ? _src[start + 2] : '\0';
            if (ctl == '-')
            {
                text = text.TrimEnd();
            }
            else if (_lstripBlocks && ctl != '+' && kind is '%' or '#')
            {
                int l = text.LastIndexOf('\n') + 1;
                if (l > 0 || lineStarting)
                {
                    bool allWs = l < text.Length;
                    for (int i = l; i < text.Length && allWs; i++)
                    {
                        allWs = text[i] is ' ' or '\t' or '\f' or '\v' or '\r';
                    }

                    if (allWs)
                    {
                        text = text[..l];
                    }
                }
            }

            Emit(TokenKind.Data, text, textLine);
            Advance(start);
            int tagStart = start + 2 + (ctl is '-' or '+' ? 1 : 0);
            int tagLine = _line;
            if (kind == '#')
            {
                int end = _src.IndexOf("#}", tagStart, StringComparison.Ordinal);
                if (end < 0)
                {
                    throw Syntax("unterminated comment '{#'", tagLine);
                }

                bool minus = end > tagStart && _src[end - 1] == '-';
                bool plus = end > tagStart && _src[end - 1] == '+';
                Advance(end + 2);
                stripNextData = minus;
                if (!minus && !plus && _trimBlocks)
                {
                    SkipOneNewline();
                }

                continue;
            }

            Advance(tagStart);
            if (kind == '{')
            {
                Emit(TokenKind.VarBegin, "{{", tagLine);
                stripNextData = LexExpression(isBlock: false, tagLine);
            }
            else
            {
                Emit(TokenKind.BlockBegin, "{%", tagLine);
                int firstToken = _tokens.Count;
                stripNextData = LexExpression(isBlock: true, tagLine);
                if (_tokens.Count == firstToken + 2 && _tokens[firstToken].IsName("raw"))
                {
                    _tokens.RemoveRange(firstToken - 1, 3);
                    stripNextData = LexRaw(stripNextData, tagLine);
                }
            }
        }

        Emit(TokenKind.Eof, string.Empty, _line);
        return _tokens;
    }

    private bool LexRaw(bool stripStart, int line)
    {
        int search = _pos;
        while (true)
        {
            int open = _src.IndexOf("{%", search, StringComparison.Ordinal);
            if (open < 0)
            {
                throw Syntax("missing '{% endraw %}' for '{% raw %}'", line);
            }

            int p = open + 2;
            bool minusLeft = p < _src.Length && _src[p] == '-';
            if (p < _src.Length && _src[p] is '-' or '+')
            {
                p++;
            }

            while (p < _src.Length && char.IsWhiteSpace(_src[p]))
            {
                p++;
            }

            if (string.CompareOrdinal(_src, p, "endraw", 0, 6) != 0)
            {
                search = open + 2;
                continue;
            }

            p += 6;
            while (p < _src.Length && char.IsWhiteSpace(_src[p]))
            {
                p++;
            }

            bool minusRight = p < _src.Length && _src[p] == '-';
            bool plusRight = p < _src.Length && _src[p] == '+';
            if (minusRight || plusRight)
            {
                p++;
            }

            if (string.CompareOrdinal(_src, p, "%}", 0, 2) != 0)
            {
                search = open + 2;
                continue;
            }

            string text = _src[_pos..open];
            if (stripStart)
            {
                text = text.TrimStart();
            }

            if (minusLeft)
            {
                text = text.TrimEnd();
            }

            Emit(TokenKind.Data, text, _line);
            Advance(p + 2);
            if (!minusRight && !plusRight && _trimBlocks)
            {
                SkipOneNewline();
            }

            return minusRight;
        }
    }

    private int FindTagStart(int from)
    {
        for (int i = from; i + 1 < _src.Length; i++)
        {
            if (_src[i] == '{' && _src[i + 1] is '{' or '%' or '#')
            {
                return i;
            }
        }

        return -1;
    }

    private void SkipOneNewline()
    {
        if (_pos < _src.Length && _src[_pos] == '\n')
        {
            Advance(_pos + 1);
        }
        else if (_pos + 1 < _src.Length && _src[_pos] == '\r' && _src[_pos + 1] == '\n')
        {
            Advance(_pos + 2);
        }
    }

    private void Advance(int to)
    {
        for (int i = _pos; i < to; i++)
        {
            if (_src[i] == '\n')
            {
                _line++;
            }
        }

        _pos = to;
    }

    private void Emit(TokenKind kind, string value, int line, object? literal = null)
    {
        if (kind == TokenKind.Data && value.Length == 0)
        {
            return;
        }

        _tokens.Add(new Token(kind, value, line, literal));
    }

    private static JinjaException Syntax(string message, int line) => new(message, line) { Kind = JinjaErrorKind.Syntax };

    /// <summary>Lexes the inside of a tag up to its end; returns whether the end had '-' (strip what follows).</summary>
    private bool LexExpression(bool isBlock, int tagLine)
    {
        var brackets = new Stack<char>();
        while (true)
        {
            while (_pos < _src.Length && char.IsWhiteSpace(_src[_pos]))
            {
                Advance(_pos + 1);
            }

            if (_pos >= _src.Length)
            {
                throw Syntax($"unexpected end of template, expected '{(isBlock ? "%}" : "}}")}'", tagLine);
            }

            if (brackets.Count == 0)
            {
                string end = isBlock ? "%}" : "}}";
                char c0 = _src[_pos];
                if ((c0 is '-' or '+') && string.CompareOrdinal(_src, _pos + 1, end, 0, 2) == 0)
                {
                    Emit(isBlock ? TokenKind.BlockEnd : TokenKind.VarEnd, end, _line);
                    Advance(_pos + 3);
                    if (c0 == '-')
                    {
                        return true;
                    }

                    return false;
                }

                if (string.CompareOrdinal(_src, _pos, end, 0, 2) == 0)
                {
                    Emit(isBlock ? TokenKind.BlockEnd : TokenKind.VarEnd, end, _line);
                    Advance(_pos + 2);
                    if (isBlock && _trimBlocks)
                    {
                        SkipOneNewline();
                    }

                    return false;
                }
            }

            char c = _src[_pos];
            if (char.IsLetter(c) || c == '_')
            {
                int s = _pos;
                while (_pos < _src.Length && (char.IsLetterOrDigit(_src[_pos]) || _src[_pos] == '_'))
                {
                    _pos++;
                }

                Emit(TokenKind.Name, _src[s.._pos], _line);
                continue;
            }

            if (char.IsAsciiDigit(c))
            {
                LexNumber();
                continue;
            }

            if (c is '\'' or '"')
            {
                LexString(c);
                continue;
            }

            string? op = null;
            foreach (string o in Operators)
            {
                if (string.CompareOrdinal(_src, _pos, o, 0, o.Length) == 0)
                {
                    op = o;
                    break;
                }
            }

            if (op is null)
            {
                throw Syntax($"unexpected character '{c}'", _line);
            }

            if (op is "(" or "[" or "{")
            {
                brackets.Push(op[0]);
            }
            else if (op is ")" or "]" or "}")
            {
                char expected = op == ")" ? '(' : op == "]" ? '[' : '{';
                if (brackets.Count == 0 || brackets.Peek() != expected)
                {
                    throw Syntax($"unexpected '{op}'", _line);
                }

                brackets.Pop();
            }

            Emit(TokenKind.Operator, op, _line);
            _pos += op.Length;
        }
    }

    private void LexNumber()
    {
        int s = _pos;
        while (_pos < _src.Length && (char.IsAsciiDigit(_src[_pos]) || _src[_pos] == '_'))
        {
            _pos++;
        }

        bool isFloat = false;
        if (_pos + 1 < _src.Length && _src[_pos] == '.' && char.IsAsciiDigit(_src[_pos + 1]))
        {
            isFloat = true;
            _pos++;
            while (_pos < _src.Length && (char.IsAsciiDigit(_src[_pos]) || _src[_pos] == '_'))
            {
                _pos++;
            }
        }

        if (_pos < _src.Length && _src[_pos] is 'e' or 'E')
        {
            int save = _pos;
            _pos++;
            if (_pos < _src.Length && _src[_pos] is '+' or '-')
            {
                _pos++;
            }

            if (_pos < _src.Length && char.IsAsciiDigit(_src[_pos]))
            {
                isFloat = true;
                while (_pos < _src.Length && char.IsAsciiDigit(_src[_pos]))
                {
                    _pos++;
                }
            }
            else
            {
                _pos = save;
            }
        }

        string text = _src[s.._pos].Replace("_", string.Empty, StringComparison.Ordinal);
        if (isFloat)
        {
            Emit(TokenKind.Float, text, _line, double.Parse(text, CultureInfo.InvariantCulture));
        }
        else
        {
            Emit(TokenKind.Integer, text, _line, long.Parse(text, CultureInfo.InvariantCulture));
        }
    }

    private void LexString(char quote)
    {
        int line = _line;
        var sb = new StringBuilder();
        int i = _pos + 1;
        while (true)
        {
            if (i >= _src.Length)
            {
                throw Syntax("unterminated string literal", line);
            }

            char c = _src[i];
            if (c == quote)
            {
                i++;
                break;
            }

            if (c == '\\' && i + 1 < _src.Length)
            {
                char e = _src[i + 1];
                i += 2;
                switch (e)
                {
                    case 'n': sb.Append('\n'); break;
                    case 't': sb.Append('\t'); break;
                    case 'r': sb.Append('\r'); break;
                    case '0': sb.Append('\0'); break;
                    case 'a': sb.Append('\a'); break;
                    case 'b': sb.Append('\b'); break;
                    case 'f': sb.Append('\f'); break;
                    case 'v': sb.Append('\v'); break;
                    case '\\': sb.Append('\\'); break;
                    case '\'': sb.Append('\''); break;
                    case '"': sb.Append('"'); break;
                    case '\n': break;
                    case 'x' when i + 2 <= _src.Length:
                        sb.Append((char)Convert.ToInt32(_src.Substring(i, 2), 16));
                        i += 2;
                        break;
                    case 'u' when i + 4 <= _src.Length:
                        sb.Append((char)Convert.ToInt32(_src.Substring(i, 4), 16));
                        i += 4;
                        break;
                    case 'U' when i + 8 <= _src.Length:
                        sb.Append(char.ConvertFromUtf32(Convert.ToInt32(_src.Substring(i, 8), 16)));
                        i += 8;
                        break;
                    default: sb.Append('\\').Append(e); break;
                }

                continue;
            }

            sb.Append(c);
            i++;
        }

        Emit(TokenKind.String, _src[_pos..i], line, sb.ToString());
        Advance(i);
    }
}
