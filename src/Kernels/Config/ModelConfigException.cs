namespace MoeServer.Kernels.Config;

/// <summary>config.json is missing, malformed, or describes a model the runtime cannot run.</summary>
public sealed class ModelConfigException(string message, Exception? inner = null) : Exception(message, inner);
