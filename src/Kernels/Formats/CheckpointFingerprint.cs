using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;

namespace MoeServer.Kernels.Formats;

/// <summary>
/// A short identity of a checkpoint directory, so nodes of a cluster can check they serve the same model before an
/// expert node answers a gateway. Hashes config.json and every safetensors file's name, length and header (the
/// 8-byte length prefix and the JSON), plus a fixed sample of its data (<see cref="SampleBlocks"/> blocks of
/// <see cref="SampleBlockBytes"/> spread evenly over the tensor bytes). The headers catch any change of shapes,
/// dtypes, offsets or file size; the sample catches retrained weights of the same shapes, which a header cannot
/// show. At most 64 KiB of tensor data per file is read, so multi-GB shards cost a few page reads.
/// A GGUF model (a file, or every part of a split file) is hashed the same way: each part's name, length, whole
/// header (metadata, tokenizer and tensor infos up to the aligned data offset) and the data sample.
/// </summary>
public static class CheckpointFingerprint
{
    public const int SampleBlocks = 16;
    public const int SampleBlockBytes = 4096;

    /// <summary>32 lowercase hex characters (the first 16 bytes of a SHA-256).</summary>
    public static string Compute(string dir)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        if (Gguf.GgufModel.IsGgufPath(dir))
        {
            AppendBlock(sha, "gguf"u8);
            foreach (string part in Gguf.GgufModel.FilePaths(dir))
            {
                if (!File.Exists(part)) throw new CheckpointFormatException(part, null, "file not found (a part of a split GGUF)");
                AppendBlock(sha, Encoding.UTF8.GetBytes(Path.GetFileName(part)));
                long dataOffset;
                using (var g = Gguf.GgufMappedFile.Open(part))
                {
                    dataOffset = g.DataOffset;
                    AppendBlock(sha, g.HeaderBytes);
                }
                using var fs = new FileStream(part, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1, FileOptions.SequentialScan);
                AppendInt64(sha, fs.Length);
                AppendDataSample(sha, fs, Math.Min(dataOffset, fs.Length));
            }
            return Convert.ToHexStringLower(sha.GetHashAndReset().AsSpan(0, 16));
        }
        string config = Path.Combine(dir, "config.json");
        if (!File.Exists(config)) throw new CheckpointFormatException(config, null, "config.json not found");
        AppendBlock(sha, File.ReadAllBytes(config));
        foreach (string path in Checkpoint.FilePaths(dir))
        {
            AppendBlock(sha, Encoding.UTF8.GetBytes(Path.GetFileName(path)));
            AppendHeader(sha, path);
        }
        return Convert.ToHexStringLower(sha.GetHashAndReset().AsSpan(0, 16));
    }

    /// <summary>Length-prefixed, so moving bytes from one field to the next cannot give the same hash.</summary>
    private static void AppendBlock(IncrementalHash sha, ReadOnlySpan<byte> bytes)
    {
        AppendInt64(sha, bytes.Length);
        sha.AppendData(bytes);
    }

    private static void AppendInt64(IncrementalHash sha, long value)
    {
        Span<byte> b = stackalloc byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(b, value);
        sha.AppendData(b);
    }

    private static void AppendHeader(IncrementalHash sha, string path)
    {
        if (!File.Exists(path)) throw new CheckpointFormatException(path, null, "file not found");
        using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1, FileOptions.SequentialScan);
        AppendInt64(sha, fs.Length);
        Span<byte> prefix = stackalloc byte[8];
        if (fs.Length < 8) throw new CheckpointFormatException(path, null, $"file is {fs.Length} bytes, too short for a safetensors header (truncated?)");
        fs.ReadExactly(prefix);
        long headerLen = BinaryPrimitives.ReadInt64LittleEndian(prefix);
        if (headerLen <= 0 || headerLen > SafetensorsFile.MaxHeaderBytes || 8 + headerLen > fs.Length)
            throw new CheckpointFormatException(path, null, $"bad header length {headerLen} for a {fs.Length}-byte file (not a safetensors file, or truncated?)");
        var header = new byte[headerLen];
        fs.ReadExactly(header);
        sha.AppendData(prefix);
        sha.AppendData(header);
        AppendDataSample(sha, fs, 8 + headerLen);
    }

    /// <summary>The whole data region when it is small, else evenly spaced blocks from its first to its last byte.</summary>
    private static void AppendDataSample(IncrementalHash sha, FileStream fs, long dataStart)
    {
        long dataLen = fs.Length - dataStart;
        var block = new byte[SampleBlockBytes];
        if (dataLen <= (long)SampleBlocks * SampleBlockBytes)
        {
            for (long at = dataStart; at < fs.Length; at += SampleBlockBytes)
                AppendAt(sha, fs, at, block.AsSpan(0, (int)Math.Min(SampleBlockBytes, fs.Length - at)));
            return;
        }
        for (int i = 0; i < SampleBlocks; i++)
            AppendAt(sha, fs, dataStart + (dataLen - SampleBlockBytes) * i / (SampleBlocks - 1), block);
    }

    private static void AppendAt(IncrementalHash sha, FileStream fs, long offset, Span<byte> buffer)
    {
        fs.Position = offset;
        fs.ReadExactly(buffer);
        sha.AppendData(buffer);
    }
}
