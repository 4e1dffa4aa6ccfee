namespace MoeServer.Kernels.Jinja;

#pragma warning disable SA1649, CA1852
internal abstract record Node(int Line);

// ---- Expressions ----
internal abstract record Expr(int Line) : Node(Line);

internal sealed record ConstExpr(int Line, object? Value) : Expr(Line);

internal sealed record NameExpr(int Line, string Name) : Expr(Line);

internal sealed record GetAttrExpr(int Line, Expr Target, string Attr) : Expr(Line);

internal sealed record GetItemExpr(int Line, Expr Target, Expr Index) : Expr(Line);

internal sealed record SliceExpr(int Line, Expr? Start, Expr? Stop, Expr? Step) : Expr(Line);

internal sealed record Argument(string? Name, Expr Value);

internal sealed record CallExpr(int Line, Expr Callee, IReadOnlyList<Argument> Args) : Expr(Line);

internal sealed record FilterExpr(int Line, Expr? Target, string Name, IReadOnlyList<Argument> Args) : Expr(Line);

internal sealed record TestExpr(int Line, Expr Target, string Name, IReadOnlyList<Argument> Args, bool Negated) : Expr(Line);

internal sealed record BinaryExpr(int Line, string Op, Expr Left, Expr Right) : Expr(Line);

internal sealed record UnaryExpr(int Line, string Op, Expr Operand) : Expr(Line);

internal sealed record CompareExpr(int Line, Expr First, IReadOnlyList<(string Op, Expr Right)> Rest) : Expr(Line);

internal sealed record CondExpr(int Line, Expr Test, Expr Then, Expr? Else) : Expr(Line);

internal sealed record ListExpr(int Line, IReadOnlyList<Expr> Items) : Expr(Line);

internal sealed record TupleExpr(int Line, IReadOnlyList<Expr> Items) : Expr(Line);

internal sealed record DictExpr(int Line, IReadOnlyList<(Expr Key, Expr Value)> Items) : Expr(Line);

// ---- Statements ----
internal abstract record Stmt(int Line) : Node(Line);

internal sealed record TextStmt(int Line, string Text) : Stmt(Line);

internal sealed record OutputStmt(int Line, Expr Value) : Stmt(Line);

internal sealed record IfStmt(int Line, IReadOnlyList<(Expr Test, IReadOnlyList<Stmt> Body)> Branches, IReadOnlyList<Stmt>? Else) : Stmt(Line);

internal sealed record ForStmt(int Line, Expr Target, Expr Iter, Expr? Filter, IReadOnlyList<Stmt> Body, IReadOnlyList<Stmt>? Else) : Stmt(Line);

internal sealed record SetStmt(int Line, Expr Target, Expr Value) : Stmt(Line);

internal sealed record SetBlockStmt(int Line, Expr Target, IReadOnlyList<FilterExpr> Filters, IReadOnlyList<Stmt> Body) : Stmt(Line);

internal sealed record MacroParam(string Name, Expr? Default);

internal sealed record MacroStmt(int Line, string Name, IReadOnlyList<MacroParam> Params, IReadOnlyList<Stmt> Body, bool UsesVarargs, bool UsesKwargs, bool UsesCaller) : Stmt(Line);

internal sealed record CallBlockStmt(int Line, CallExpr Call, IReadOnlyList<MacroParam> CallerParams, IReadOnlyList<Stmt> Body) : Stmt(Line);

internal sealed record FilterBlockStmt(int Line, IReadOnlyList<FilterExpr> Filters, IReadOnlyList<Stmt> Body) : Stmt(Line);

internal sealed record WithStmt(int Line, IReadOnlyList<(Expr Target, Expr Value)> Assignments, IReadOnlyList<Stmt> Body) : Stmt(Line);

internal sealed record ScopeStmt(int Line, IReadOnlyList<Stmt> Body) : Stmt(Line);

internal sealed record BreakStmt(int Line) : Stmt(Line);

internal sealed record ContinueStmt(int Line) : Stmt(Line);

#pragma warning restore SA1649, CA1852
