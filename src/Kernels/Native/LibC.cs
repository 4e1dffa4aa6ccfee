using System.Runtime.InteropServices;

namespace MoeServer.Kernels.Native;

/// <summary>The few libc entry points the native kernels need (Linux only; callers tolerate failure).</summary>
internal static unsafe partial class LibC
{
    /// <summary>MADV_HUGEPAGE: ask transparent huge pages for the range (Linux).</summary>
    public const int MadvHugePage = 14;

    [LibraryImport("libc", EntryPoint = "madvise", SetLastError = true)]
    private static partial int MadviseNative(void* addr, nuint length, int advice);

    /// <summary>Calls madvise; returns false (never throws) when unavailable or refused.</summary>
    public static bool TryMadvise(void* addr, nuint length, int advice)
    {
        if (!OperatingSystem.IsLinux())
        {
            return false;
        }

        try
        {
            return MadviseNative(addr, length, advice) == 0;
        }
        catch (DllNotFoundException)
        {
            return false;
        }
        catch (EntryPointNotFoundException)
        {
            return false;
        }
    }

    [LibraryImport("libc", EntryPoint = "setenv", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int SetEnvNative(string name, string value, int overwrite);

    /// <summary>
    /// Sets a variable in the C environment native libraries read (Environment.SetEnvironmentVariable does not reach
    /// it on Unix), unless it is already set. Returns false when unavailable.
    /// </summary>
    public static bool TrySetEnvironmentDefault(string name, string value)
    {
        if (!OperatingSystem.IsLinux())
        {
            return false;
        }

        try
        {
            return SetEnvNative(name, value, overwrite: 0) == 0;
        }
        catch (DllNotFoundException)
        {
            return false;
        }
        catch (EntryPointNotFoundException)
        {
            return false;
        }
    }
}
