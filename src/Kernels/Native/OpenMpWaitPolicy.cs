using System.Runtime.CompilerServices;

namespace MoeServer.Kernels.Native;

/// <summary>
/// libtorch's OpenMP threads spin after every parallel op by default. The native worker pool runs the bf16 kernels
/// right after torch ops, so spinning OpenMP threads and pool threads fight for the same cores: on a 2-core machine
/// with anything else running, a 128-token bf16 prefill of the trained default model took ~3 s instead of ~45 ms.
/// With OMP_WAIT_POLICY=PASSIVE idle OpenMP threads sleep. It must be in the C environment before libgomp loads
/// (with libtorch, on first torch use), hence a module initializer; a value the operator set is kept.
/// </summary>
internal static class OpenMpWaitPolicy
{
#pragma warning disable CA2255 // runs before any torch use in this library; nothing else can guarantee that order
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void PassiveUnlessSet() => LibC.TrySetEnvironmentDefault("OMP_WAIT_POLICY", "PASSIVE");
}
