// MSBuild task (RoslynCodeTaskFactory) that marks one versioned dependency of an ELF shared library as weak.
// Why: TorchSharp 0.107.0's libLibTorchSharp.so asks for GLIBCXX_3.4.32, which Debian 12's libstdc++ lacks.
// The only symbol behind that version is std::ios_base_library_init, which nothing calls, so flagging the
// requirement VER_FLG_WEAK in .gnu.version_r lets the loader accept the library. Only the build-output copy
// is touched, and only when the system libstdc++ does not define the version.
using System;
using System.IO;
using System.Text;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;

public class ElfWeakVersion : Task
{
    [Required] public string Library { get; set; } = "";
    [Required] public string Version { get; set; } = "";
    public string SystemLibrary { get; set; } = "/usr/lib/x86_64-linux-gnu/libstdc++.so.6";

    private const uint ShtGnuVerneed = 0x6ffffffe;
    private const ushort VerFlgWeak = 0x2;

    public override bool Execute()
    {
        if (!File.Exists(Library)) return true;
        if (!File.Exists(SystemLibrary))
        {
            Log.LogMessage(MessageImportance.Normal, $"ElfWeakVersion: {SystemLibrary} not found; leaving {Library} as is.");
            return true;
        }
        if (Contains(File.ReadAllBytes(SystemLibrary), Encoding.ASCII.GetBytes(Version + "\0")))
        {
            Log.LogMessage(MessageImportance.Normal, $"ElfWeakVersion: system libstdc++ has {Version}; nothing to do.");
            return true;
        }
        byte[] elf = File.ReadAllBytes(Library);
        try
        {
            int patched = Patch(elf, Version);
            if (patched < 0)
            {
                Log.LogMessage(MessageImportance.High, $"ElfWeakVersion: {Path.GetFileName(Library)} already marks {Version} weak.");
                return true;
            }
            if (patched == 0)
            {
                Log.LogMessage(MessageImportance.Normal, $"ElfWeakVersion: {Library} does not require {Version}.");
                return true;
            }
            File.WriteAllBytes(Library, elf);
            Log.LogMessage(MessageImportance.High, $"ElfWeakVersion: marked {Version} weak in {Library} (system libstdc++ lacks it).");
            return true;
        }
        catch (Exception e)
        {
            Log.LogError($"ElfWeakVersion: cannot patch {Library}: {e.Message}");
            return false;
        }
    }

    /// <returns>number of entries newly flagged; -1 if all were already weak; 0 if none found.</returns>
    private static int Patch(byte[] elf, string version)
    {
        if (elf.Length < 64 || elf[0] != 0x7f || elf[1] != (byte)'E' || elf[2] != (byte)'L' || elf[3] != (byte)'F')
            throw new InvalidDataException("not an ELF file");
        if (elf[4] != 2 || elf[5] != 1) throw new InvalidDataException("only 64-bit little-endian ELF is supported");
        long shoff = BitConverter.ToInt64(elf, 0x28);
        int shentsize = BitConverter.ToUInt16(elf, 0x3A);
        int shnum = BitConverter.ToUInt16(elf, 0x3C);
        int found = 0, flagged = 0;
        for (int i = 0; i < shnum; i++)
        {
            long sh = shoff + (long)i * shentsize;
            if (BitConverter.ToUInt32(elf, (int)sh + 4) != ShtGnuVerneed) continue;
            long off = BitConverter.ToInt64(elf, (int)sh + 24);
            int link = (int)BitConverter.ToUInt32(elf, (int)sh + 40);
            int count = (int)BitConverter.ToUInt32(elf, (int)sh + 44);
            long strOff = BitConverter.ToInt64(elf, (int)(shoff + (long)link * shentsize) + 24);
            long vn = off;
            for (int n = 0; n < count; n++)
            {
                int cnt = BitConverter.ToUInt16(elf, (int)vn + 2);
                long aux = vn + BitConverter.ToUInt32(elf, (int)vn + 8);
                for (int a = 0; a < cnt; a++)
                {
                    int nameOff = (int)BitConverter.ToUInt32(elf, (int)aux + 8);
                    if (ReadCString(elf, strOff + nameOff) == version)
                    {
                        found++;
                        ushort flags = BitConverter.ToUInt16(elf, (int)aux + 4);
                        if ((flags & VerFlgWeak) == 0)
                        {
                            flags |= VerFlgWeak;
                            BitConverter.GetBytes(flags).CopyTo(elf, (int)aux + 4);
                            flagged++;
                        }
                    }
                    aux += BitConverter.ToUInt32(elf, (int)aux + 12);
                }
                vn += BitConverter.ToUInt32(elf, (int)vn + 12);
            }
        }
        return found == 0 ? 0 : flagged == 0 ? -1 : flagged;
    }

    private static string ReadCString(byte[] b, long at)
    {
        int end = (int)at;
        while (b[end] != 0) end++;
        return Encoding.ASCII.GetString(b, (int)at, end - (int)at);
    }

    private static bool Contains(byte[] haystack, byte[] needle)
    {
        for (int i = 0; i + needle.Length <= haystack.Length; i++)
        {
            int j = 0;
            while (j < needle.Length && haystack[i + j] == needle[j]) j++;
            if (j == needle.Length) return true;
        }
        return false;
    }
}
