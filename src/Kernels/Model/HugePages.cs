using MoeServer.Kernels.Native;

namespace MoeServer.Kernels.Model;

/// <summary>
/// Memory advice for weights: huge pages for tensor memory before it is first written (with transparent huge
/// pages in "madvise" mode this lifts streaming read bandwidth by up to ~2x), and populate-read for the mapped
/// checkpoint so a copy does not take one page fault per 4 KiB.
/// </summary>
internal static unsafe class HugePages
{
    private const int MadvPopulateRead = 22; // Linux 5.14+
    private const long HugePage = 2L << 20;

    public static void PopulateRead(void* p, long bytes)
    {
        if (bytes < (64 << 10)) return;
        long start = (long)p & ~4095L;
        LibC.TryMadvise((void*)start, (nuint)((long)p + bytes - start), MadvPopulateRead);
    }

    public static void Advise(void* p, long bytes)
    {
        long start = ((long)p + HugePage - 1) & ~(HugePage - 1);
        long end = ((long)p + bytes) & ~(HugePage - 1);
        if (end > start) LibC.TryMadvise((void*)start, (nuint)(end - start), LibC.MadvHugePage);
    }
}
