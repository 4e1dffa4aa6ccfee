using MoeServer.Actors.Experts;
using MoeServer.Kernels.Config;
using MoeServer.Kernels.Model;
using MoeServer.Kernels.Tests.Support;

namespace MoeServer.Actors.Tests;

/// <summary>The <c>disk</c> tier really makes the next load of an expert a disk read: its checkpoint pages leave the
/// page cache after each load.</summary>
public class StorageTierTests
{
    [Fact]
    public void A_disk_tier_load_leaves_none_of_the_experts_pages_cached_and_a_memory_tier_load_leaves_them()
    {
        // A private copy: other tests of the process map the shared tiny checkpoint, and pages another mapping holds
        // cannot leave the page cache.
        string shared = TinyCheckpoints.Get(ModelArchitecture.Mixtral);
        string dir = Directory.CreateTempSubdirectory("tier-test-").FullName;
        foreach (var f in Directory.GetFiles(shared)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        try
        {
            Check(dir);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    private static void Check(string dir)
    {
        string fs = new DriveInfo(Path.GetFullPath(dir)).DriveFormat;
        using var source = new ExpertWeightSource(dir, WeightPrecision.F32, "cpu");
        var id = new ExpertId(1, 2);

        var (ffn, _) = source.Load(id, dropAfter: false);
        ffn.Dispose();
        Assert.Equal(1.0, source.CachedFraction(id), 3);

        var (again, _) = source.Load(id, dropAfter: true);
        using var sameWeights = again;
        Assert.True(source.DropFromPageCache(id), "madvise/posix_fadvise refused");
        double cached = source.CachedFraction(id);
        if (fs is "tmpfs" or "ramfs")
        {
            // Memory-backed file systems have no disk: the page cache is where the file lives.
            Assert.Equal(1.0, cached, 3);
            return;
        }
        Assert.True(cached == 0, $"{cached:P0} of expert {id}'s pages are still cached on {fs}");

        var (third, _) = source.Load(id, dropAfter: false); // read back from the disk
        third.Dispose();
        Assert.Equal(1.0, source.CachedFraction(id), 3);
    }
}
