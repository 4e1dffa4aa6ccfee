using System.Text;

namespace MoeServer.Kernels.Jinja;

/// <summary>A variable scope: the template's globals, a for-loop iteration, a macro call, a with block.</summary>
internal sealed class Frame
{
    private readonly Dictionary<string, object?> _vars = new(StringComparer.Ordinal);

    public Frame(Frame? parent) => Parent = parent;

    public Frame? Parent { get; }

    public bool TryGet(string name, out object? value)
    {
        for (Frame? f = this; f is not null; f = f.Parent)
        {
            if (f._vars.TryGetValue(name, out value))
            {
                return true;
            }
        }

        value = null;
        return false;
    }

    public void Set(string name, object? value) => _vars[name] = value;
}

/// <summary>Tree-walking evaluator with jinja2's semantics (sandboxed, immutable: lists and dicts cannot be modified).</summary>
internal sealed partial class Evaluator
{
    private const int MaxDepth = 200;
    private readonly JinjaEnvironment _env;
    private int _depth;

    public Evaluator(JinjaEnvironment env) => _env = env;

    private enum Flow
    {
        Normal,
        Break,
        Continue,
    }

    public string Render(IReadOnlyList<Stmt> body, Frame frame)
    {
        var sb = new StringBuilder();
        Flow flow = Exec(body, frame, sb);
        if (flow != Flow.Normal)
        {
            throw new JinjaException($"'{(flow == Flow.Break ? "break" : "continue")}' outside a for loop", 0) { Kind = JinjaErrorKind.Syntax };
        }

        return sb.ToString();
    }

    private static JinjaException At(int line, Exception e) => e switch
    {
        JinjaException je => je,
        JinjaRuntimeError re => new JinjaException(re.Message, line) { Kind = JinjaErrorKind.Runtime },
        _ => new JinjaException($"{e.GetType().Name}: {e.Message}", line) { Kind = JinjaErrorKind.Runtime },
    };

    private Flow Exec(IReadOnlyList<Stmt> body, Frame frame, StringBuilder sb)
    {
        foreach (Stmt s in body)
        {
            Flow f;
            try
            {
                f = ExecOne(s, frame, sb);
            }
            catch (Exception e) when (e is JinjaRuntimeError or InvalidCastException or ArgumentException or OverflowException
                                      or FormatException or IndexOutOfRangeException or DivideByZeroException or InvalidOperationException)
            {
                throw At(s.Line, e);
            }

            if (f != Flow.Normal)
            {
                return f;
            }
        }

        return Flow.Normal;
    }

    private Flow ExecOne(Stmt s, Frame frame, StringBuilder sb)
    {
        switch (s)
        {
            case TextStmt t:
                sb.Append(t.Text);
                return Flow.Normal;
            case OutputStmt o:
                sb.Append(Py.Str(Eval(o.Value, frame)));
                return Flow.Normal;
            case IfStmt i:
                foreach ((Expr test, IReadOnlyList<Stmt> branch) in i.Branches)
                {
                    if (Py.Truthy(Eval(test, frame)))
                    {
                        return Exec(branch, frame, sb);
                    }
                }

                return i.Else is null ? Flow.Normal : Exec(i.Else, frame, sb);
            case ForStmt f:
                ExecFor(f, frame, sb);
                return Flow.Normal;
            case SetStmt set:
                Assign(set.Target, Eval(set.Value, frame), frame);
                return Flow.Normal;
            case SetBlockStmt sbs:
                {
                    var inner = new StringBuilder();
                    Exec(sbs.Body, frame, inner);
                    object? v = inner.ToString();
                    foreach (FilterExpr fe in sbs.Filters)
                    {
                        v = ApplyFilter(fe, v, frame);
                    }

                    Assign(sbs.Target, v, frame);
                    return Flow.Normal;
                }

            case MacroStmt m:
                frame.Set(m.Name, MakeMacro(m.Name, m.Params, m.Body, frame, m.UsesVarargs, m.UsesKwargs, m.UsesCaller));
                return Flow.Normal;
            case CallBlockStmt cb:
                {
                    JinjaCallable caller = MakeMacro("caller", cb.CallerParams, cb.Body, frame, false, false, false);
                    object? callee = Eval(cb.Call.Callee, frame);
                    CallArgs args = EvalArgs(cb.Call.Args, frame);
                    args.Keyword.Add(new("caller", caller));
                    sb.Append(Py.Str(Call(callee, args, cb.Call.Callee)));
                    return Flow.Normal;
                }

            case FilterBlockStmt fb:
                {
                    var inner = new StringBuilder();
                    Exec(fb.Body, frame, inner);
                    object? v = inner.ToString();
                    foreach (FilterExpr fe in fb.Filters)
                    {
                        v = ApplyFilter(fe, v, frame);
                    }

                    sb.Append(Py.Str(v));
                    return Flow.Normal;
                }

            case WithStmt w:
                {
                    var inner = new Frame(frame);
                    foreach ((Expr target, Expr value) in w.Assignments)
                    {
                        Assign(target, Eval(value, frame), inner);
                    }

                    return Exec(w.Body, inner, sb);
                }

            case ScopeStmt sc:
                return Exec(sc.Body, frame, sb);
            case BreakStmt:
                return Flow.Break;
            case ContinueStmt:
                return Flow.Continue;
            default:
                throw new JinjaException($"unsupported statement {s.GetType().Name}", s.Line) { Kind = JinjaErrorKind.Unsupported };
        }
    }

    private void ExecFor(ForStmt f, Frame frame, StringBuilder sb)
    {
        List<object?> all = Iterate(Eval(f.Iter, frame));
        List<object?> items;
        if (f.Filter is null)
        {
            items = all;
        }
        else
        {
            items = [];
            foreach (object? item in all)
            {
                var probe = new Frame(frame);
                Assign(f.Target, item, probe);
                if (Py.Truthy(Eval(f.Filter, probe)))
                {
                    items.Add(item);
                }
            }
        }

        if (items.Count == 0)
        {
            if (f.Else is not null)
            {
                Exec(f.Else, frame, sb);
            }

            return;
        }

        var loop = new LoopContext(items); // depth grows only in recursive loops, which are not supported

        for (int i = 0; i < items.Count; i++)
        {
            loop.Index0 = i;
            var iter = new Frame(frame);
            iter.Set("loop", loop);
            Assign(f.Target, items[i], iter);
            Flow flow = Exec(f.Body, iter, sb);
            if (flow == Flow.Break)
            {
                break;
            }
        }
    }

    private static void Assign(Expr target, object? value, Frame frame)
    {
        switch (target)
        {
            case NameExpr n:
                frame.Set(n.Name, value);
                break;
            case TupleExpr t:
                {
                    List<object?> values = value is string or List<object?> or Dictionary<string, object?> or PyIterable ? Iterate(value)
                        : throw new JinjaRuntimeError($"cannot unpack non-iterable {Py.TypeName(value)} object");
                    if (values.Count != t.Items.Count)
                    {
                        throw new JinjaRuntimeError(values.Count < t.Items.Count
                            ? $"not enough values to unpack (expected {t.Items.Count}, got {values.Count})"
                            : $"too many values to unpack (expected {t.Items.Count})");
                    }

                    for (int i = 0; i < values.Count; i++)
                    {
                        Assign(t.Items[i], values[i], frame);
                    }

                    break;
                }

            case GetAttrExpr { Target: NameExpr owner } a:
                {
                    if (!frame.TryGet(owner.Name, out object? ns) || ns is not JinjaNamespace jn)
                    {
                        throw new JinjaRuntimeError("cannot assign attribute on non-namespace object");
                    }

                    jn.Attributes[a.Attr] = value;
                    break;
                }

            default:
                throw new JinjaRuntimeError("cannot assign to this expression");
        }
    }

    private JinjaCallable MakeMacro(string name, IReadOnlyList<MacroParam> ps, IReadOnlyList<Stmt> body, Frame closure, bool varargs, bool kwargs, bool usesCaller)
    {
        return new JinjaCallable(name, args =>
        {
            var frame = new Frame(closure);
            int n = args.Positional.Count;
            if (n > ps.Count && !varargs)
            {
                throw new JinjaRuntimeError($"macro '{name}' takes not more than {ps.Count} argument(s)");
            }

            var given = new bool[ps.Count];
            for (int i = 0; i < Math.Min(n, ps.Count); i++)
            {
                frame.Set(ps[i].Name, args.Positional[i]);
                given[i] = true;
            }

            var extraKw = new Dictionary<string, object?>(StringComparer.Ordinal);
            object? caller = null;
            foreach (KeyValuePair<string, object?> kv in args.Keyword)
            {
                int idx = -1;
                for (int i = 0; i < ps.Count; i++)
                {
                    if (ps[i].Name == kv.Key)
                    {
                        idx = i;
                    }
                }

                if (idx >= 0)
                {
                    if (given[idx])
                    {
                        throw new JinjaRuntimeError($"macro '{name}' got multiple values for argument '{kv.Key}'");
                    }

                    frame.Set(kv.Key, kv.Value);
                    given[idx] = true;
                }
                else if (kv.Key == "caller" && name != "caller")
                {
                    caller = kv.Value;
                }
                else if (kwargs)
                {
                    extraKw[kv.Key] = kv.Value;
                }
                else
                {
                    throw new JinjaRuntimeError($"macro '{name}' takes no keyword argument '{kv.Key}'");
                }
            }

            for (int i = 0; i < ps.Count; i++)
            {
                if (!given[i])
                {
                    frame.Set(ps[i].Name, ps[i].Default is null ? Undefined.Named(ps[i].Name) : Eval(ps[i].Default!, frame));
                }
            }

            frame.Set("varargs", new PyTuple(args.Positional.Skip(ps.Count)));
            frame.Set("kwargs", extraKw);
            if (usesCaller || caller is not null)
            {
                frame.Set("caller", caller ?? Undefined.Named("caller"));
            }

            if (++_depth > MaxDepth)
            {
                throw new JinjaRuntimeError("maximum recursion depth exceeded");
            }

            try
            {
                var sb = new StringBuilder();
                Flow flow = Exec(body, frame, sb);
                if (flow != Flow.Normal)
                {
                    throw new JinjaRuntimeError("'break' / 'continue' outside a for loop");
                }

                return sb.ToString();
            }
            finally
            {
                _depth--;
            }
        });
    }

    // ---- Expressions ----
    public object? Eval(Expr e, Frame frame)
    {
        switch (e)
        {
            case ConstExpr c:
                return c.Value;
            case NameExpr n:
                if (frame.TryGet(n.Name, out object? v))
                {
                    return v;
                }

                return _env.Globals.TryGetValue(n.Name, out object? g) ? g : Undefined.Named(n.Name);
            case GetAttrExpr a:
                return GetAttr(Eval(a.Target, frame), a.Attr);
            case GetItemExpr gi:
                {
                    object? target = Eval(gi.Target, frame);
                    if (gi.Index is SliceExpr sl)
                    {
                        RequireDefined(target);
                        return Slice(target, sl.Start is null ? null : Eval(sl.Start, frame), sl.Stop is null ? null : Eval(sl.Stop, frame), sl.Step is null ? null : Eval(sl.Step, frame));
                    }

                    return GetItem(target, Eval(gi.Index, frame));
                }

            case CallExpr call:
                return Call(Eval(call.Callee, frame), EvalArgs(call.Args, frame), call.Callee);
            case FilterExpr f:
                return ApplyFilter(f, Eval(f.Target!, frame), frame);
            case TestExpr t:
                {
                    bool r = ApplyTest(t, frame);
                    return t.Negated ? !r : r;
                }

            case BinaryExpr b:
                return EvalBinary(b, frame);
            case UnaryExpr u:
                {
                    object? x = Eval(u.Operand, frame);
                    switch (u.Op)
                    {
                        case "not":
                            return !Py.Truthy(x);
                        case "-":
                            return x switch
                            {
                                long l => (object)(-l),
                                double d => -d,
                                bool bb => bb ? -1L : 0L,
                                Undefined un => throw new JinjaRuntimeError(un.Hint),
                                _ => throw new JinjaRuntimeError($"bad operand type for unary -: '{Py.TypeName(x)}'"),
                            };
                        default:
                            return x switch
                            {
                                long or double => x,
                                bool bb => (object)(bb ? 1L : 0L),
                                Undefined un => throw new JinjaRuntimeError(un.Hint),
                                _ => throw new JinjaRuntimeError($"bad operand type for unary +: '{Py.TypeName(x)}'"),
                            };
                    }
                }

            case CompareExpr ce:
                {
                    object? left = Eval(ce.First, frame);
                    foreach ((string op, Expr rightExpr) in ce.Rest)
                    {
                        object? right = Eval(rightExpr, frame);
                        if (!CompareOp(op, left, right))
                        {
                            return false;
                        }

                        left = right;
                    }

                    return true;
                }

            case CondExpr cond:
                if (Py.Truthy(Eval(cond.Test, frame)))
                {
                    return Eval(cond.Then, frame);
                }

                return cond.Else is null ? new Undefined("the inline if-expression on line " + cond.Line + " evaluated to false and no else section was defined.") : Eval(cond.Else, frame);
            case ListExpr l:
                return l.Items.Select(x => Eval(x, frame)).ToList();
            case TupleExpr t:
                return new PyTuple(t.Items.Select(x => Eval(x, frame)));
            case DictExpr d:
                {
                    var dict = new Dictionary<string, object?>(StringComparer.Ordinal);
                    foreach ((Expr k, Expr val) in d.Items)
                    {
                        object? key = Eval(k, frame);
                        if (key is not string ks)
                        {
                            throw new JinjaException("dict literals with non-string keys are not supported", d.Line) { Kind = JinjaErrorKind.Unsupported };
                        }

                        dict[ks] = Eval(val, frame);
                    }

                    return dict;
                }

            case SliceExpr:
                throw new JinjaRuntimeError("a slice is only valid inside [ ]");
            default:
                throw new JinjaException($"unsupported expression {e.GetType().Name}", e.Line) { Kind = JinjaErrorKind.Unsupported };
        }
    }

    private CallArgs EvalArgs(IReadOnlyList<Argument> args, Frame frame)
    {
        var pos = new List<object?>();
        var kw = new List<KeyValuePair<string, object?>>();
        foreach (Argument a in args)
        {
            object? v = Eval(a.Value, frame);
            if (a.Name is null)
            {
                pos.Add(v);
            }
            else
            {
                kw.Add(new(a.Name, v));
            }
        }

        return new CallArgs(pos, kw);
    }

    private static object? Call(object? callee, CallArgs args, Expr calleeExpr)
    {
        return callee switch
        {
            JinjaCallable c => c.Invoke(args),
            Undefined u => throw new JinjaRuntimeError(calleeExpr is GetAttrExpr ga && u.Hint.Contains("has no attribute", StringComparison.Ordinal)
                ? $"{u.Hint} (calling '{ga.Attr}')" : u.Hint),
            _ => throw new JinjaRuntimeError($"'{Py.TypeName(callee)}' object is not callable"),
        };
    }

    private static void RequireDefined(object? v)
    {
        if (v is Undefined u)
        {
            throw new JinjaRuntimeError(u.Hint);
        }
    }

    private object? EvalBinary(BinaryExpr b, Frame frame)
    {
        if (b.Op == "and")
        {
            object? l = Eval(b.Left, frame);
            return Py.Truthy(l) ? Eval(b.Right, frame) : l;
        }

        if (b.Op == "or")
        {
            object? l = Eval(b.Left, frame);
            return Py.Truthy(l) ? l : Eval(b.Right, frame);
        }

        object? a = Eval(b.Left, frame);
        object? c = Eval(b.Right, frame);
        if (b.Op == "~")
        {
            return Py.Str(a) + Py.Str(c);
        }

        return Arith(b.Op, a, c);
    }

    internal static object? Arith(string op, object? a, object? b)
    {
        RequireDefined(a);
        RequireDefined(b);
        if (Py.IsNumber(a) && Py.IsNumber(b))
        {
            bool isFloat = a is double || b is double;
            switch (op)
            {
                case "+": return isFloat ? (object)(Py.ToDouble(a) + Py.ToDouble(b)) : checked(Py.ToLong(a) + Py.ToLong(b));
                case "-": return isFloat ? (object)(Py.ToDouble(a) - Py.ToDouble(b)) : checked(Py.ToLong(a) - Py.ToLong(b));
                case "*": return isFloat ? (object)(Py.ToDouble(a) * Py.ToDouble(b)) : checked(Py.ToLong(a) * Py.ToLong(b));
                case "/":
                    if (Py.ToDouble(b) == 0)
                    {
                        throw new JinjaRuntimeError("division by zero");
                    }

                    return Py.ToDouble(a) / Py.ToDouble(b);
                case "//":
                    if (Py.ToDouble(b) == 0)
                    {
                        throw new JinjaRuntimeError("integer division or modulo by zero");
                    }

                    if (isFloat)
                    {
                        return Math.Floor(Py.ToDouble(a) / Py.ToDouble(b));
                    }

                    {
                        long x = Py.ToLong(a), y = Py.ToLong(b);
                        long q = x / y;
                        if ((x % y != 0) && ((x < 0) != (y < 0)))
                        {
                            q--;
                        }

                        return q;
                    }

                case "%":
                    if (Py.ToDouble(b) == 0)
                    {
                        throw new JinjaRuntimeError("integer division or modulo by zero");
                    }

                    if (isFloat)
                    {
                        double x = Py.ToDouble(a), y = Py.ToDouble(b);
                        double m = x % y;
                        if (m == 0)
                        {
                            return Math.CopySign(0.0, y); // Python: a zero remainder takes the divisor's sign
                        }

                        return (m < 0) != (y < 0) ? m + y : m;
                    }

                    {
                        long x = Py.ToLong(a), y = Py.ToLong(b);
                        long m = x % y;
                        return m != 0 && (m < 0) != (y < 0) ? m + y : m;
                    }

                case "**":
                    if (!isFloat && Py.ToLong(b) >= 0)
                    {
                        long r = 1, x = Py.ToLong(a);
                        for (long i = 0; i < Py.ToLong(b); i++)
                        {
                            r = checked(r * x);
                        }

                        return r;
                    }

                    return Math.Pow(Py.ToDouble(a), Py.ToDouble(b));
            }
        }

        switch (op)
        {
            case "+" when a is string sa && b is string sb:
                return sa + sb;
            case "+" when a is List<object?> la && b is List<object?> lb && (a is PyTuple) == (b is PyTuple):
                {
                    var r = a is PyTuple ? new PyTuple(la) : new List<object?>(la);
                    r.AddRange(lb);
                    return r;
                }

            case "*" when a is string s && b is long or bool:
                return string.Concat(Enumerable.Repeat(s, (int)Math.Max(0, Py.ToLong(b))));
            case "*" when a is long or bool && b is string s2:
                return string.Concat(Enumerable.Repeat(s2, (int)Math.Max(0, Py.ToLong(a))));
            case "*" when a is long or bool && b is List<object?>:
                return Arith("*", b, a);
            case "*" when a is List<object?> l && b is long or bool:
                {
                    var r = new List<object?>();
                    for (long i = 0; i < Py.ToLong(b); i++)
                    {
                        r.AddRange(l);
                    }

                    return a is PyTuple ? new PyTuple(r) : r;
                }

            case "%" when a is string fmt:
                return Methods.PercentFormat(fmt, b);
        }

        string sym = op;
        if (op == "+" && a is string)
        {
            throw new JinjaRuntimeError($"can only concatenate str (not \"{Py.TypeName(b)}\") to str");
        }

        if (op == "+" && a is List<object?> && a is not PyTuple)
        {
            throw new JinjaRuntimeError($"can only concatenate list (not \"{Py.TypeName(b)}\") to list");
        }

        throw new JinjaRuntimeError($"unsupported operand type(s) for {sym}: '{Py.TypeName(a)}' and '{Py.TypeName(b)}'");
    }

    internal static bool CompareOp(string op, object? left, object? right)
    {
        switch (op)
        {
            case "==": return Py.Equals(left, right);
            case "!=": return !Py.Equals(left, right);
            case "in": return Contains(right, left);
            case "notin": return !Contains(right, left);
        }

        RequireDefined(left);
        RequireDefined(right);
        int c = Py.Compare(left, right, op);
        return op switch
        {
            "<" => c < 0,
            "<=" => c <= 0,
            ">" => c > 0,
            _ => c >= 0,
        };
    }

    internal static bool Contains(object? container, object? item)
    {
        switch (container)
        {
            case string s:
                if (item is not string sub)
                {
                    throw new JinjaRuntimeError($"'in <string>' requires string as left operand, not {Py.TypeName(item)}");
                }

                return s.Contains(sub, StringComparison.Ordinal);
            case List<object?> l:
                return l.Any(x => Py.Equals(x, item));
            case Dictionary<string, object?> d:
                return item is string k && d.ContainsKey(k);
            case PyIterable it:
                return it.Items.Any(x => Py.Equals(x, item));
            case Undefined:
                return false;
            default:
                throw new JinjaRuntimeError($"argument of type '{Py.TypeName(container)}' is not iterable");
        }
    }

    /// <summary>Python iteration: list items, dict keys, string characters; undefined iterates as empty.</summary>
    internal static List<object?> Iterate(object? v) => v switch
    {
        List<object?> l => l,
        Dictionary<string, object?> d => d.Keys.Cast<object?>().ToList(),
        string s => Py.CodePoints(s).Cast<object?>().ToList(),
        PyIterable it => it.Items,
        Undefined => [],
        _ => throw new JinjaRuntimeError($"'{Py.TypeName(v)}' object is not iterable"),
    };

    internal static object? GetAttr(object? obj, string name)
    {
        switch (obj)
        {
            case Undefined u:
                throw new JinjaRuntimeError(u.Hint);
            case Dictionary<string, object?> d:
                if (Methods.Bind(obj, name) is { } dm)
                {
                    return dm;
                }

                return d.TryGetValue(name, out object? v) ? v : new Undefined($"'dict object' has no attribute '{name}'");
            case JinjaNamespace ns:
                return ns.Attributes.TryGetValue(name, out object? nv) ? nv : new Undefined($"'Namespace' object has no attribute '{name}'");
            case LoopContext lc:
                return lc.Get(name);
            default:
                return Methods.Bind(obj, name) ?? new Undefined($"'{(obj is null ? "None" : Py.TypeName(obj) + " object")}' has no attribute '{name}'");
        }
    }

    internal static object? GetItem(object? obj, object? key)
    {
        switch (obj)
        {
            case Undefined u:
                throw new JinjaRuntimeError(u.Hint);
            case Dictionary<string, object?> d:
                if (key is string ks && d.TryGetValue(ks, out object? v))
                {
                    return v;
                }

                return key is string k2 ? Methods.Bind(obj, k2) ?? new Undefined($"'dict object' has no attribute '{k2}'")
                    : new Undefined($"'dict object' has no attribute {Py.Repr(key)}");
            case List<object?> l when key is long or bool:
                {
                    long i = Py.ToLong(key);
                    if (i < 0)
                    {
                        i += l.Count;
                    }

                    return i >= 0 && i < l.Count ? l[(int)i] : new Undefined($"'{Py.TypeName(obj)} object' has no element {Py.ToLong(key)}");
                }

            case string s when key is long or bool:
                {
                    List<string> cps = Py.CodePoints(s);
                    long i = Py.ToLong(key);
                    if (i < 0)
                    {
                        i += cps.Count;
                    }

                    return i >= 0 && i < cps.Count ? cps[(int)i] : new Undefined($"'str object' has no element {Py.ToLong(key)}");
                }

            case JinjaNamespace or LoopContext when key is string attr:
                return GetAttr(obj, attr);
            default:
                if (key is string name)
                {
                    return GetAttr(obj, name);
                }

                return new Undefined($"'{(obj is null ? "None" : Py.TypeName(obj) + " object")}' has no element {Py.Repr(key)}");
        }
    }

    internal static object? Slice(object? target, object? start, object? stop, object? step)
    {
        List<object?> src;
        bool isString = false;
        switch (target)
        {
            case string s:
                src = Py.CodePoints(s).Cast<object?>().ToList();
                isString = true;
                break;
            case List<object?> l:
                src = l;
                break;
            default:
                throw new JinjaRuntimeError($"'{Py.TypeName(target)}' object is not subscriptable"); // jinja2 slices bypass getitem
        }

        long n = src.Count;
        long st = step is null ? 1 : SliceIndex(step);
        if (st == 0)
        {
            throw new JinjaRuntimeError("slice step cannot be zero");
        }

        long lo, hi;
        if (st > 0)
        {
            lo = start is null ? 0 : Clamp(SliceIndex(start), n, 0, n);
            hi = stop is null ? n : Clamp(SliceIndex(stop), n, 0, n);
        }
        else
        {
            lo = start is null ? n - 1 : Clamp(SliceIndex(start), n, -1, n - 1);
            hi = stop is null ? -1 : Clamp(SliceIndex(stop), n, -1, n - 1);
        }

        var r = new List<object?>();
        for (long i = lo; st > 0 ? i < hi : i > hi; i += st)
        {
            r.Add(src[(int)i]);
        }

        if (isString)
        {
            return string.Concat(r.Cast<string>());
        }

        return target is PyTuple ? new PyTuple(r) : r;

        static long Clamp(long i, long n, long min, long max)
        {
            if (i < 0)
            {
                i += n;
            }

            return Math.Clamp(i, min, max);
        }

        static long SliceIndex(object? v) => v switch
        {
            null => throw new JinjaRuntimeError("slice indices must be integers or None"),
            long or bool => Py.ToLong(v),
            _ => throw new JinjaRuntimeError("slice indices must be integers or None or have an __index__ method"),
        };
    }
}
