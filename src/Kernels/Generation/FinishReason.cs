namespace MoeServer.Kernels.Generation;

/// <summary>Why a generation ended (the OpenAI finish_reason values plus the engine's own).</summary>
public enum FinishReason
{
    Stop,
    Length,
    Cancelled,
    Error,
}
