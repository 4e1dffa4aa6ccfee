namespace MoeServer.Kernels.Jinja;

/// <summary>
/// A parsed Jinja template, rendered the way transformers' <c>apply_chat_template</c> renders chat templates:
/// jinja2's ImmutableSandboxedEnvironment with trim_blocks and lstrip_blocks, the loopcontrols extension
/// (break/continue), a no-op <c>{% generation %}</c> block, <c>tojson</c> as <c>json.dumps</c> (ensure_ascii off),
/// and the globals <c>raise_exception</c> and <c>strftime_now</c>. See docs/chat-templates.md for the subset.
/// </summary>
public sealed class JinjaTemplate
{
    private readonly List<Stmt> _body;

    private JinjaTemplate(string source, List<Stmt> body)
    {
        Source = source;
        _body = body;
    }

    /// <summary>The template source.</summary>
    public string Source { get; }

    /// <summary>Parses a template.</summary>
    /// <exception cref="JinjaException">A syntax error or an unsupported construct, naming the template line.</exception>
    public static JinjaTemplate Parse(string source)
    {
        ArgumentNullException.ThrowIfNull(source);
        List<Token> tokens = new Lexer(source.Replace("\r\n", "\n", StringComparison.Ordinal)).Tokenize();
        return new JinjaTemplate(source, new Parser(tokens).ParseTemplate());
    }

    /// <summary>
    /// Renders with the given variables: strings, numbers, booleans, null, <see cref="System.Text.Json.JsonElement"/>,
    /// dictionaries with string keys (their order is kept) and lists, nested.
    /// </summary>
    /// <param name="variables">Template variables.</param>
    /// <param name="now">The clock <c>strftime_now</c> reads (default: local time).</param>
    /// <exception cref="JinjaException">A runtime error or the template's <c>raise_exception</c>.</exception>
    public string Render(IReadOnlyDictionary<string, object?> variables, Func<DateTime>? now = null)
    {
        ArgumentNullException.ThrowIfNull(variables);
        var env = new JinjaEnvironment(now ?? (() => DateTime.Now));
        var frame = new Frame(null);
        foreach (KeyValuePair<string, object?> kv in variables)
        {
            frame.Set(kv.Key, JinjaEnvironment.Import(kv.Value));
        }

        try
        {
            return new Evaluator(env).Render(_body, frame);
        }
        catch (InsufficientExecutionStackException e)
        {
            throw new JinjaException("the template recursed too deeply", e) { Kind = JinjaErrorKind.Runtime };
        }
    }
}
