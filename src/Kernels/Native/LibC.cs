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

    /// <summary>MADV_DONTNEED: drop the range from this process's page tables (file pages stay in the page cache).</summary>
    public const int MadvDontNeed = 4;

    private const int PosixFadvDontNeed = 4;

    [LibraryImport("libc", EntryPoint = "posix_fadvise")]
    private static partial int FadviseNative(IntPtr fd, long offset, long length, int advice);

    [LibraryImport("libc", EntryPoint = "mincore", SetLastError = true)]
    private static partial int MincoreNative(void* addr, nuint length, byte* vec);

    [LibraryImport("libc", EntryPoint = "fdatasync")]
    private static partial int FdatasyncNative(IntPtr fd);

    /// <summary>Writes the file's dirty pages to the disk (they could not be dropped from the cache otherwise).</summary>
    public static bool TryFdatasync(Microsoft.Win32.SafeHandles.SafeFileHandle file)
    {
        if (!OperatingSystem.IsLinux()) return false;
        bool added = false;
        try
        {
            file.DangerousAddRef(ref added);
            return FdatasyncNative(file.DangerousGetHandle()) == 0;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return false;
        }
        finally
        {
            if (added) file.DangerousRelease();
        }
    }

    /// <summary>posix_fadvise(DONTNEED) on a file range: the kernel drops its clean, unmapped pages from the cache.</summary>
    public static bool TryFadviseDontNeed(Microsoft.Win32.SafeHandles.SafeFileHandle file, long offset, long length)
    {
        if (!OperatingSystem.IsLinux()) return false;
        bool added = false;
        try
        {
            file.DangerousAddRef(ref added);
            return FadviseNative(file.DangerousGetHandle(), offset, length, PosixFadvDontNeed) == 0;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return false;
        }
        finally
        {
            if (added) file.DangerousRelease();
        }
    }

    /// <summary>Share of the pages of a mapped range that are in the page cache (mincore), or -1 when unavailable.
    /// <paramref name="addr"/> must be page-aligned.</summary>
    public static double CachedFraction(byte* addr, long length)
    {
        if (!OperatingSystem.IsLinux() || length <= 0) return -1;
        long page = Environment.SystemPageSize;
        long pages = (length + page - 1) / page;
        var vec = new byte[pages];
        try
        {
            fixed (byte* v = vec)
                if (MincoreNative(addr, (nuint)length, v) != 0) return -1;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return -1;
        }
        return vec.Count(b => (b & 1) != 0) / (double)pages;
    }
}
