using System.Runtime.InteropServices;
using System.Text;
using MoeServer.Kernels.Quantization;
using MoeServer.Kernels.Tests.Support;

namespace MoeServer.Kernels.Tests.Quantization;

/// <summary>
/// One golden fixture written by bench/Quant.Fixtures from llama.cpp's ggml: the input rows, then per type ggml's
/// quantized bytes and its dequantized floats, then per weight type ggml's dot products of row r with row (r+1) % rows
/// quantized to the activation format (<c>dot:TYPE</c>, whose Type is the activation type).
/// </summary>
public sealed class QuantFixture
{
    public sealed record Entry(string Name, GgmlType Type, byte[] Bytes, float[] Floats);

    public required string Name { get; init; }
    public required int Rows { get; init; }
    public required int N { get; init; }
    public required float[] Input { get; init; }
    public required IReadOnlyList<Entry> Entries { get; init; }

    public static readonly string[] Cases = { "random768", "special256", "random416", "random384" };

    public static string Dir => Path.Combine(TrainedModels.RepoRoot(), "tests", "Kernels.Tests", "Quantization", "Fixtures");

    public static QuantFixture Load(string name)
    {
        using var r = new BinaryReader(File.OpenRead(Path.Combine(Dir, name + ".qfix")));
        Assert.Equal("QFIX", Encoding.ASCII.GetString(r.ReadBytes(4)));
        Assert.Equal(1, r.ReadInt32());
        int rows = r.ReadInt32(), n = r.ReadInt32(), count = r.ReadInt32();
        var entries = new List<Entry>();
        for (int i = 0; i < count; i++)
        {
            string en = Encoding.ASCII.GetString(r.ReadBytes(r.ReadUInt16()));
            var type = (GgmlType)r.ReadInt32();
            byte[] bytes = r.ReadBytes(checked((int)r.ReadInt64()));
            float[] floats = MemoryMarshal.Cast<byte, float>(r.ReadBytes(checked((int)r.ReadInt64() * 4))).ToArray();
            entries.Add(new Entry(en, type, bytes, floats));
        }

        float[] input = MemoryMarshal.Cast<byte, float>(entries[0].Bytes).ToArray();
        Assert.Equal(rows * n, input.Length);
        return new QuantFixture { Name = name, Rows = rows, N = n, Input = input, Entries = entries };
    }

    public Entry Quantized(GgmlType type) => Entries.Single(e => !e.Name.StartsWith("dot:", StringComparison.Ordinal) && e.Type == type && e.Name != "input");
}
