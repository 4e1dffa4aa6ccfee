namespace MoeServer.Kernels.Tokenization;

/// <summary>
/// A chat template could not be found or parsed (a syntax error, or a construct outside the supported Jinja
/// subset), or rendering failed: the template's own <c>raise_exception(message)</c> (then the message is the
/// template's), or a runtime error naming the template line. The inner exception is the
/// <see cref="Jinja.JinjaException"/> where there is one.
/// </summary>
public sealed class ChatTemplateException : Exception
{
    /// <summary>Creates the exception.</summary>
    public ChatTemplateException()
    {
    }

    /// <summary>Creates the exception with a message.</summary>
    public ChatTemplateException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with a message and cause.</summary>
    public ChatTemplateException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
