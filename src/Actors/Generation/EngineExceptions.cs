namespace MoeServer.Actors.Generation;

/// <summary>The wait queue is full: the request was refused at once (HTTP 429).</summary>
public sealed class EngineOverloadedException(string message) : Exception(message);

/// <summary>The engine does not take requests now (draining for shutdown, not started): HTTP 503.</summary>
public sealed class EngineUnavailableException(string message) : Exception(message);

/// <summary>A request field is invalid for this model (HTTP 400); <see cref="Field"/> names it.</summary>
public sealed class InvalidGenerationRequestException(string field, string message) : Exception(message)
{
    public string Field { get; } = field;
}
