namespace MoeServer.Actors.Experts;

/// <summary>An expert could not run a step's rows: no node hosts it within the retry deadline, or it failed.</summary>
public sealed class ExpertUnavailableException(string message) : Exception(message);
