using MoeServer.Kernels.Native;

namespace MoeServer.Kernels.Tests.Native;

public class HugePageBufferTests
{
    [Fact]
    public unsafe void Rounds_up_aligns_and_exposes_the_memory()
    {
        using var buf = new HugePageBuffer(3 * 1024 * 1024 + 5, zero: true);
        Assert.Equal(4L * 1024 * 1024, buf.ByteLength);
        Assert.Equal(0L, (long)buf.Pointer % HugePageBuffer.HugePageSize);
        Span<int> ints = buf.AsSpan<int>();
        Assert.Equal(1024 * 1024, ints.Length);
        Assert.True(ints.IndexOfAnyExcept(0) < 0);
        ints[^1] = 42;
        Assert.Equal(42, buf.GetPointer<int>()[ints.Length - 1]);
        Assert.Equal(42, buf.AsSpan<int>(ints.Length - 1, 1)[0]);
        buf.Prefault();
        Assert.Equal(42, ints[^1]);
    }

    [Fact]
    public void Dispose_frees_and_blocks_further_use()
    {
        var buf = HugePageBuffer.Allocate<float>(10);
        buf.Dispose();
        Assert.True(buf.IsClosed);
        Assert.Throws<ObjectDisposedException>(() => buf.AsSpan<float>().Length);
    }
}
