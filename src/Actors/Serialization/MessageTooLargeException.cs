namespace MoeServer.Actors.Serialization;

/// <summary>A message would not fit the remote transport's frame: raised instead of letting the transport drop it.</summary>
public sealed class MessageTooLargeException(string message) : Exception(message);
