using System.Runtime.InteropServices;

namespace MoeServer.Kernels.Model;

/// <summary>
/// madvise(MADV_HUGEPAGE) on weight memory before it is first written: with transparent huge pages in "madvise"
/// mode this gives 2 MiB pages, which lifts streaming read bandwidth from ~45 to ~80 GB/s on the project's machines.
/// </summary>
internal static unsafe partial class HugePages
{
    private const int MadvHugepage = 14;
    private const long HugePage = 2L << 20;

    [LibraryImport("libc", SetLastError = true)]
    private static partial int madvise(void* addr, nuint length, int advice);

    private const int MadvPopulateRead = 22;

    /// <summary>
    /// Maps a file-backed range's pages in one call (MADV_POPULATE_READ, Linux 5.14+) instead of one fault per
    /// 4 KiB page while copying; best effort.
    /// </summary>
    public static void PopulateRead(void* p, long bytes)
    {
        if (!OperatingSystem.IsLinux() || bytes < (64 << 10)) return;
        long start = (long)p & ~4095L;
        _ = madvise((void*)start, (nuint)((long)p + bytes - start), MadvPopulateRead);
    }

    public static void Advise(void* p, long bytes)
    {
        if (!OperatingSystem.IsLinux() || bytes < HugePage) return;
        long start = ((long)p + HugePage - 1) & ~(HugePage - 1);
        long end = ((long)p + bytes) & ~(HugePage - 1);
        if (end <= start) return;
        _ = madvise((void*)start, (nuint)(end - start), MadvHugepage); // best effort: a refusal only costs speed
    }
}
