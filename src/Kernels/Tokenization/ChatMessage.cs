namespace MoeServer.Kernels.Tokenization;

/// <summary>One chat turn: role ("system", "user", "assistant", ...) and its text.</summary>
public sealed record ChatMessage(string Role, string Content);
