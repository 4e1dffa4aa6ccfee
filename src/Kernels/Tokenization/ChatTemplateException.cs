namespace MoeServer.Kernels.Tokenization;

/// <summary>
/// A chat template could not be found or recognised, or it rejected the conversation (as the Jinja
/// template's <c>raise_exception</c> would).
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
