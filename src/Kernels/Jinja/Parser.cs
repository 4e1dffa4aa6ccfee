namespace MoeServer.Kernels.Jinja;

/// <summary>Recursive-descent parser for the Jinja subset HF chat templates use (jinja2's grammar and precedence).</summary>
internal sealed class Parser
{
    private static readonly HashSet<string> UnsupportedTags = new(StringComparer.Ordinal)
    {
        "block", "extends", "include", "import", "from", "autoescape", "do", "trans", "pluralize", "debug",
    };

    private readonly List<Token> _tokens;
    private int _i;

    public Parser(List<Token> tokens) => _tokens = tokens;

    private Token Cur => _tokens[_i];

    private Token Peek(int k = 1) => _tokens[Math.Min(_i + k, _tokens.Count - 1)];

    public static JinjaException Syntax(string message, int line) => new(message, line) { Kind = JinjaErrorKind.Syntax };

    public static JinjaException Unsupported(string message, int line) => new(message, line) { Kind = JinjaErrorKind.Unsupported };

    public List<Stmt> ParseTemplate()
    {
        List<Stmt> body = Subparse(null, out _);
        if (Cur.Kind != TokenKind.Eof)
        {
            throw Syntax($"unexpected {Cur}", Cur.Line);
        }

        return body;
    }

    private Token Next()
    {
        Token t = Cur;
        if (_i < _tokens.Count - 1)
        {
            _i++;
        }

        return t;
    }

    private Token Expect(TokenKind kind, string? value = null)
    {
        Token t = Cur;
        if (t.Kind != kind || (value is not null && t.Value != value))
        {
            string want = value is not null ? $"'{value}'" : kind switch
            {
                TokenKind.Name => "a name",
                TokenKind.BlockEnd => "'%}'",
                TokenKind.VarEnd => "'}}'",
                _ => kind.ToString(),
            };
            throw Syntax($"expected {want}, got {t}", t.Line);
        }

        return Next();
    }

    private bool SkipOp(string op)
    {
        if (Cur.IsOp(op))
        {
            Next();
            return true;
        }

        return false;
    }

    private bool SkipName(string name)
    {
        if (Cur.IsName(name))
        {
            Next();
            return true;
        }

        return false;
    }

    /// <summary>Statements until a block tag whose name is in <paramref name="ends"/> (left after its '{%' name).</summary>
    private List<Stmt> Subparse(string[]? ends, out string endName)
    {
        var body = new List<Stmt>();
        endName = string.Empty;
        while (true)
        {
            Token t = Cur;
            switch (t.Kind)
            {
                case TokenKind.Eof:
                    if (ends is not null)
                    {
                        throw Syntax($"unexpected end of template; expected {string.Join(" or ", ends.Select(e => $"'{{% {e} %}}'"))}", t.Line);
                    }

                    return body;
                case TokenKind.Data:
                    Next();
                    body.Add(new TextStmt(t.Line, t.Value));
                    break;
                case TokenKind.VarBegin:
                    Next();
                    Expr e = ParseTuple();
                    Expect(TokenKind.VarEnd);
                    body.Add(new OutputStmt(t.Line, e));
                    break;
                case TokenKind.BlockBegin:
                    Next();
                    Token name = Cur;
                    if (name.Kind != TokenKind.Name)
                    {
                        throw Syntax($"expected a tag name after '{{%', got {name}", name.Line);
                    }

                    if (ends is not null && ends.Contains(name.Value))
                    {
                        Next();
                        endName = name.Value;
                        return body;
                    }

                    body.Add(ParseStatement());
                    break;
                default:
                    throw Syntax($"unexpected {t}", t.Line);
            }
        }
    }

    private Stmt ParseStatement()
    {
        Token t = Next();
        int line = t.Line;
        switch (t.Value)
        {
            case "for": return ParseFor(line);
            case "if": return ParseIf(line);
            case "set": return ParseSet(line);
            case "macro": return ParseMacro(line);
            case "call": return ParseCallBlock(line);
            case "filter": return ParseFilterBlock(line);
            case "with": return ParseWith(line);
            case "generation":
                {
                    Expect(TokenKind.BlockEnd);
                    List<Stmt> body = Subparse(["endgeneration"], out _);
                    Expect(TokenKind.BlockEnd);
                    return new ScopeStmt(line, body);
                }

            case "break":
                Expect(TokenKind.BlockEnd);
                return new BreakStmt(line);
            case "continue":
                Expect(TokenKind.BlockEnd);
                return new ContinueStmt(line);
            default:
                if (UnsupportedTags.Contains(t.Value))
                {
                    throw Unsupported($"the '{{% {t.Value} %}}' tag is not supported in chat templates", line);
                }

                throw Syntax($"unknown tag '{t.Value}' (or an end tag without its opening tag)", line);
        }
    }

    private ForStmt ParseFor(int line)
    {
        Expr target = ParseAssignTarget(allowTuple: true, allowAttr: false);
        Expect(TokenKind.Name, "in");
        Expr iter = ParseTuple(noCondExpr: true, stopAtIf: true);
        Expr? filter = null;
        if (SkipName("if"))
        {
            filter = ParseExpression();
        }

        if (Cur.IsName("recursive"))
        {
            throw Unsupported("recursive for loops are not supported", Cur.Line);
        }

        Expect(TokenKind.BlockEnd);
        List<Stmt> body = Subparse(["endfor", "else"], out string end);
        List<Stmt>? elseBody = null;
        if (end == "else")
        {
            Expect(TokenKind.BlockEnd);
            elseBody = Subparse(["endfor"], out _);
        }

        Expect(TokenKind.BlockEnd);
        return new ForStmt(line, target, iter, filter, body, elseBody);
    }

    private IfStmt ParseIf(int line)
    {
        var branches = new List<(Expr, IReadOnlyList<Stmt>)>();
        List<Stmt>? elseBody = null;
        Expr test = ParseTuple();
        while (true)
        {
            Expect(TokenKind.BlockEnd);
            List<Stmt> body = Subparse(["elif", "else", "endif"], out string end);
            branches.Add((test, body));
            if (end == "elif")
            {
                test = ParseTuple();
                continue;
            }

            if (end == "else")
            {
                Expect(TokenKind.BlockEnd);
                elseBody = Subparse(["endif"], out _);
            }

            Expect(TokenKind.BlockEnd);
            return new IfStmt(line, branches, elseBody);
        }
    }

    private Stmt ParseSet(int line)
    {
        Expr target = ParseAssignTarget(allowTuple: true, allowAttr: true);
        if (SkipOp("="))
        {
            Expr value = ParseTuple();
            Expect(TokenKind.BlockEnd);
            return new SetStmt(line, target, value);
        }

        List<FilterExpr> filters = ParseFilterChain();
        Expect(TokenKind.BlockEnd);
        List<Stmt> body = Subparse(["endset"], out _);
        Expect(TokenKind.BlockEnd);
        return new SetBlockStmt(line, target, filters, body);
    }

    private List<FilterExpr> ParseFilterChain()
    {
        var filters = new List<FilterExpr>();
        while (SkipOp("|"))
        {
            filters.Add(ParseFilterCall(null));
        }

        return filters;
    }

    private List<MacroParam> ParseSignature()
    {
        var ps = new List<MacroParam>();
        Expect(TokenKind.Operator, "(");
        while (!Cur.IsOp(")"))
        {
            if (ps.Count > 0)
            {
                Expect(TokenKind.Operator, ",");
                if (Cur.IsOp(")"))
                {
                    break;
                }
            }

            string name = Expect(TokenKind.Name).Value;
            Expr? def = null;
            if (SkipOp("="))
            {
                def = ParseExpression();
            }
            else if (ps.Count > 0 && ps[^1].Default is not null)
            {
                throw Syntax("non-default argument follows default argument", Cur.Line);
            }

            ps.Add(new MacroParam(name, def));
        }

        Expect(TokenKind.Operator, ")");
        return ps;
    }

    private MacroStmt ParseMacro(int line)
    {
        string name = Expect(TokenKind.Name).Value;
        List<MacroParam> ps = ParseSignature();
        Expect(TokenKind.BlockEnd);
        int start = _i;
        List<Stmt> body = Subparse(["endmacro"], out _);
        bool varargs = false, kwargs = false, caller = false;
        for (int k = start; k < _i; k++)
        {
            if (_tokens[k].Kind == TokenKind.Name)
            {
                varargs |= _tokens[k].Value == "varargs";
                kwargs |= _tokens[k].Value == "kwargs";
                caller |= _tokens[k].Value == "caller";
            }
        }

        Expect(TokenKind.BlockEnd);
        return new MacroStmt(line, name, ps, body, varargs, kwargs, caller);
    }

    private CallBlockStmt ParseCallBlock(int line)
    {
        List<MacroParam> callerParams = Cur.IsOp("(") ? ParseSignature() : [];
        Expr call = ParseExpression();
        if (call is not CallExpr ce)
        {
            throw Syntax("expected a macro call after '{% call %}'", line);
        }

        Expect(TokenKind.BlockEnd);
        List<Stmt> body = Subparse(["endcall"], out _);
        Expect(TokenKind.BlockEnd);
        return new CallBlockStmt(line, ce, callerParams, body);
    }

    private FilterBlockStmt ParseFilterBlock(int line)
    {
        var filters = new List<FilterExpr> { ParseFilterCall(null) };
        filters.AddRange(ParseFilterChain());
        Expect(TokenKind.BlockEnd);
        List<Stmt> body = Subparse(["endfilter"], out _);
        Expect(TokenKind.BlockEnd);
        return new FilterBlockStmt(line, filters, body);
    }

    private WithStmt ParseWith(int line)
    {
        var assignments = new List<(Expr, Expr)>();
        while (Cur.Kind != TokenKind.BlockEnd)
        {
            if (assignments.Count > 0)
            {
                Expect(TokenKind.Operator, ",");
            }

            Expr target = ParseAssignTarget(allowTuple: false, allowAttr: false);
            Expect(TokenKind.Operator, "=");
            assignments.Add((target, ParseExpression()));
        }

        Expect(TokenKind.BlockEnd);
        List<Stmt> body = Subparse(["endwith"], out _);
        Expect(TokenKind.BlockEnd);
        return new WithStmt(line, assignments, body);
    }

    private Expr ParseAssignTarget(bool allowTuple, bool allowAttr)
    {
        int line = Cur.Line;
        Expr One()
        {
            Token n = Expect(TokenKind.Name);
            if (allowAttr && Cur.IsOp("."))
            {
                Next();
                string attr = Expect(TokenKind.Name).Value;
                return new GetAttrExpr(n.Line, new NameExpr(n.Line, n.Value), attr);
            }

            return new NameExpr(n.Line, n.Value);
        }

        bool paren = allowTuple && SkipOp("(");
        Expr first = One();
        if (!allowTuple || (!Cur.IsOp(",") && !paren))
        {
            return first;
        }

        var items = new List<Expr> { first };
        while (SkipOp(","))
        {
            if (Cur.Kind != TokenKind.Name)
            {
                break;
            }

            items.Add(One());
        }

        if (paren)
        {
            Expect(TokenKind.Operator, ")");
        }

        return new TupleExpr(line, items);
    }

    // ---- Expressions (jinja2 precedence) ----

    /// <summary>An expression, or a tuple when commas separate several ("a, b").</summary>
    private Expr ParseTuple(bool noCondExpr = false, bool stopAtIf = false)
    {
        int line = Cur.Line;
        var items = new List<Expr>();
        bool comma = false;
        while (true)
        {
            if (items.Count > 0)
            {
                if (!SkipOp(","))
                {
                    break;
                }

                comma = true;
            }

            if (Cur.Kind is TokenKind.BlockEnd or TokenKind.VarEnd || Cur.IsOp(")") || Cur.IsOp("=") || (stopAtIf && Cur.IsName("if")))
            {
                break;
            }

            items.Add(noCondExpr ? ParseOr() : ParseExpression());
        }

        if (items.Count == 0)
        {
            throw Syntax($"expected an expression, got {Cur}", Cur.Line);
        }

        return !comma && items.Count == 1 ? items[0] : new TupleExpr(line, items);
    }

    private Expr ParseExpression()
    {
        Expr e = ParseOr();
        while (Cur.IsName("if"))
        {
            int line = Next().Line;
            Expr test = ParseOr();
            Expr? otherwise = null;
            if (SkipName("else"))
            {
                otherwise = ParseExpression();
            }

            e = new CondExpr(line, test, e, otherwise);
        }

        return e;
    }

    private Expr ParseOr()
    {
        Expr left = ParseAnd();
        while (Cur.IsName("or"))
        {
            int line = Next().Line;
            left = new BinaryExpr(line, "or", left, ParseAnd());
        }

        return left;
    }

    private Expr ParseAnd()
    {
        Expr left = ParseNot();
        while (Cur.IsName("and"))
        {
            int line = Next().Line;
            left = new BinaryExpr(line, "and", left, ParseNot());
        }

        return left;
    }

    private Expr ParseNot()
    {
        if (Cur.IsName("not"))
        {
            int line = Next().Line;
            return new UnaryExpr(line, "not", ParseNot());
        }

        return ParseCompare();
    }

    private Expr ParseCompare()
    {
        int line = Cur.Line;
        Expr first = ParseMath1();
        var rest = new List<(string, Expr)>();
        while (true)
        {
            Token t = Cur;
            if (t.Kind == TokenKind.Operator && t.Value is "==" or "!=" or "<" or "<=" or ">" or ">=")
            {
                Next();
                rest.Add((t.Value, ParseMath1()));
            }
            else if (t.IsName("in"))
            {
                Next();
                rest.Add(("in", ParseMath1()));
            }
            else if (t.IsName("not") && Peek().IsName("in"))
            {
                Next();
                Next();
                rest.Add(("notin", ParseMath1()));
            }
            else
            {
                break;
            }
        }

        return rest.Count == 0 ? first : new CompareExpr(line, first, rest);
    }

    private Expr ParseMath1()
    {
        Expr left = ParseConcat();
        while (Cur.Kind == TokenKind.Operator && Cur.Value is "+" or "-")
        {
            Token op = Next();
            left = new BinaryExpr(op.Line, op.Value, left, ParseConcat());
        }

        return left;
    }

    private Expr ParseConcat()
    {
        Expr left = ParseMath2();
        while (Cur.IsOp("~"))
        {
            int line = Next().Line;
            left = new BinaryExpr(line, "~", left, ParseMath2());
        }

        return left;
    }

    private Expr ParseMath2()
    {
        Expr left = ParsePow();
        while (Cur.Kind == TokenKind.Operator && Cur.Value is "*" or "/" or "//" or "%")
        {
            Token op = Next();
            left = new BinaryExpr(op.Line, op.Value, left, ParsePow());
        }

        return left;
    }

    private Expr ParsePow()
    {
        Expr left = ParseUnary(true);
        while (Cur.IsOp("**"))
        {
            int line = Next().Line;
            left = new BinaryExpr(line, "**", left, ParseUnary(true));
        }

        return left;
    }

    private Expr ParseUnary(bool withFilter)
    {
        Token t = Cur;
        Expr node;
        if (t.IsOp("-") || t.IsOp("+"))
        {
            Next();
            node = new UnaryExpr(t.Line, t.Value, ParseUnary(false));
        }
        else
        {
            node = ParsePostfix(ParsePrimary());
        }

        return withFilter ? ParseFilterExpr(node) : node;
    }

    private Expr ParsePrimary()
    {
        Token t = Cur;
        switch (t.Kind)
        {
            case TokenKind.Name:
                Next();
                return t.Value switch
                {
                    "true" or "True" => new ConstExpr(t.Line, true),
                    "false" or "False" => new ConstExpr(t.Line, false),
                    "none" or "None" => new ConstExpr(t.Line, null),
                    _ => new NameExpr(t.Line, t.Value),
                };
            case TokenKind.String:
                {
                    Next();
                    string s = (string)t.Literal!;
                    while (Cur.Kind == TokenKind.String)
                    {
                        s += (string)Next().Literal!;
                    }

                    return new ConstExpr(t.Line, s);
                }

            case TokenKind.Integer:
            case TokenKind.Float:
                Next();
                return new ConstExpr(t.Line, t.Literal);
            case TokenKind.Operator when t.Value == "(":
                {
                    Next();
                    if (SkipOp(")"))
                    {
                        return new TupleExpr(t.Line, []);
                    }

                    Expr e = ParseTuple();
                    Expect(TokenKind.Operator, ")");
                    return e;
                }

            case TokenKind.Operator when t.Value == "[":
                {
                    Next();
                    var items = new List<Expr>();
                    while (!Cur.IsOp("]"))
                    {
                        if (items.Count > 0)
                        {
                            Expect(TokenKind.Operator, ",");
                            if (Cur.IsOp("]"))
                            {
                                break;
                            }
                        }

                        items.Add(ParseExpression());
                    }

                    Expect(TokenKind.Operator, "]");
                    return new ListExpr(t.Line, items);
                }

            case TokenKind.Operator when t.Value == "{":
                {
                    Next();
                    var items = new List<(Expr, Expr)>();
                    while (!Cur.IsOp("}"))
                    {
                        if (items.Count > 0)
                        {
                            Expect(TokenKind.Operator, ",");
                            if (Cur.IsOp("}"))
                            {
                                break;
                            }
                        }

                        Expr k = ParseExpression();
                        Expect(TokenKind.Operator, ":");
                        items.Add((k, ParseExpression()));
                    }

                    Expect(TokenKind.Operator, "}");
                    return new DictExpr(t.Line, items);
                }

            default:
                throw Syntax($"unexpected {t} in an expression", t.Line);
        }
    }

    private Expr ParsePostfix(Expr node)
    {
        while (true)
        {
            Token t = Cur;
            if (t.IsOp("."))
            {
                Next();
                Token a = Next();
                if (a.Kind == TokenKind.Name)
                {
                    node = new GetAttrExpr(t.Line, node, a.Value);
                }
                else if (a.Kind == TokenKind.Integer)
                {
                    node = new GetItemExpr(t.Line, node, new ConstExpr(a.Line, a.Literal));
                }
                else
                {
                    throw Syntax($"expected an attribute name after '.', got {a}", a.Line);
                }
            }
            else if (t.IsOp("["))
            {
                Next();
                node = new GetItemExpr(t.Line, node, ParseSubscript());
            }
            else if (t.IsOp("("))
            {
                node = new CallExpr(t.Line, node, ParseCallArgs());
            }
            else
            {
                return node;
            }
        }
    }

    private Expr ParseSubscript()
    {
        int line = Cur.Line;
        Expr? start = null, stop = null, step = null;
        if (!Cur.IsOp(":"))
        {
            start = ParseExpression();
            if (SkipOp("]"))
            {
                return start;
            }
        }

        Expect(TokenKind.Operator, ":");
        if (!Cur.IsOp("]") && !Cur.IsOp(":"))
        {
            stop = ParseExpression();
        }

        if (SkipOp(":") && !Cur.IsOp("]"))
        {
            step = ParseExpression();
        }

        Expect(TokenKind.Operator, "]");
        return new SliceExpr(line, start, stop, step);
    }

    private List<Argument> ParseCallArgs()
    {
        Expect(TokenKind.Operator, "(");
        var args = new List<Argument>();
        while (!Cur.IsOp(")"))
        {
            if (args.Count > 0)
            {
                Expect(TokenKind.Operator, ",");
                if (Cur.IsOp(")"))
                {
                    break;
                }
            }

            if (Cur.IsOp("*") || Cur.IsOp("**"))
            {
                throw Unsupported("'*args' / '**kwargs' in calls are not supported", Cur.Line);
            }

            if (Cur.Kind == TokenKind.Name && Peek().IsOp("="))
            {
                string name = Next().Value;
                Next();
                args.Add(new Argument(name, ParseExpression()));
            }
            else
            {
                if (args.Count > 0 && args[^1].Name is not null)
                {
                    throw Syntax("positional argument follows keyword argument", Cur.Line);
                }

                args.Add(new Argument(null, ParseExpression()));
            }
        }

        Expect(TokenKind.Operator, ")");
        return args;
    }

    private FilterExpr ParseFilterCall(Expr? target)
    {
        Token n = Expect(TokenKind.Name);
        string name = n.Value;
        while (Cur.IsOp(".") && Peek().Kind == TokenKind.Name)
        {
            Next();
            name += "." + Next().Value;
        }

        if (!Evaluator.FilterNames.Contains(name))
        {
            throw Evaluator.UnknownFilter(name, n.Line);
        }

        IReadOnlyList<Argument> args = Cur.IsOp("(") ? ParseCallArgs() : [];
        return new FilterExpr(n.Line, target, name, args);
    }

    private Expr ParseFilterExpr(Expr node)
    {
        while (true)
        {
            if (Cur.IsOp("|"))
            {
                Next();
                FilterExpr f = ParseFilterCall(node);
                node = f;
            }
            else if (Cur.IsName("is"))
            {
                int line = Next().Line;
                bool negated = SkipName("not");
                Token n = Expect(TokenKind.Name);
                string name = n.Value;
                if (!Evaluator.TestNames.Contains(name))
                {
                    throw Unsupported($"the test '{name}' {(Evaluator.JinjaOnlyTests.Contains(name) ? "is not supported by this interpreter" : "does not exist")}", n.Line);
                }

                IReadOnlyList<Argument> args = [];
                if (Cur.IsOp("("))
                {
                    args = ParseCallArgs();
                }
                else if (Cur.Kind is TokenKind.Name or TokenKind.String or TokenKind.Integer or TokenKind.Float
                         && !(Cur.Kind == TokenKind.Name && Cur.Value is "else" or "or" or "and" or "if" or "in" or "not" or "is"))
                {
                    args = [new Argument(null, ParsePostfix(ParsePrimary()))];
                }
                else if (Cur.IsOp("[") || Cur.IsOp("{"))
                {
                    args = [new Argument(null, ParsePostfix(ParsePrimary()))];
                }

                node = new TestExpr(line, node, name, args, negated);
            }
            else
            {
                return node;
            }
        }
    }
}
