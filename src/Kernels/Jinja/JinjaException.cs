namespace MoeServer.Kernels.Jinja;

/// <summary>
/// A Jinja template failed to parse or render: a syntax error, a construct this interpreter does not support, a
/// runtime error (as jinja2 would raise it: undefined attribute, type error), or the template's own
/// <c>raise_exception(message)</c>. The message names the template line where known.
/// </summary>
public class JinjaException : Exception
{
    /// <summary>Creates the exception.</summary>
    public JinjaException()
    {
    }

    /// <summary>Creates the exception with a message.</summary>
    public JinjaException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with a message and cause.</summary>
    public JinjaException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Creates the exception for a template line (1-based; 0 = unknown).</summary>
    public JinjaException(string message, int line)
        : base(line > 0 ? $"{message} (template line {line})" : message)
    {
        Line = line;
        Detail = message;
    }

    /// <summary>The 1-based template line, 0 when unknown.</summary>
    public int Line { get; }

    /// <summary>The message without the line suffix.</summary>
    public string? Detail { get; }

    /// <summary>What kind of failure this is.</summary>
    public JinjaErrorKind Kind { get; init; } = JinjaErrorKind.Runtime;
}

/// <summary>The kinds of <see cref="JinjaException"/>.</summary>
public enum JinjaErrorKind
{
    /// <summary>The source is not valid Jinja.</summary>
    Syntax,

    /// <summary>Valid Jinja using a construct (tag, filter, test, method) this interpreter does not implement.</summary>
    Unsupported,

    /// <summary>An error while rendering (undefined value used, type error, ...).</summary>
    Runtime,

    /// <summary>The template called <c>raise_exception(message)</c>; the message is the template's own.</summary>
    Raised,
}
