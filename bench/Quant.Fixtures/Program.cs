using System.Runtime.InteropServices;
using System.Text;

namespace MoeServer.Bench.QuantFixtures;

/// <summary>
/// Writes the golden quantization fixtures of tests/Kernels.Tests/Quantization/Fixtures from llama.cpp's own ggml
/// (libggml-base.so / libggml-cpu.so of LLamaSharp.Backend.Cpu 0.30.0, called directly): fixed pseudo-random and
/// hand-made rows, each quantized with ggml's <c>quantize_row_*_ref</c> (what llama.cpp's quantizer runs without an
/// importance matrix), dequantized with <c>dequantize_row_*</c>, and, for the weight types, dotted with the next row
/// quantized to the type's activation format by ggml's scalar <c>ggml_vec_dot_*_generic</c>.
/// Not run in CI: run it by hand when the format set changes.
/// Usage: dotnet run -c Release --project bench/Quant.Fixtures [-- OUT_DIR]
/// </summary>
internal static unsafe class Program
{
    // ggml_type values (ggml.h).
    private const int F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15;

    private static readonly Dictionary<int, string> Names = new()
    {
        [F16] = "f16", [Q4_0] = "q4_0", [Q4_1] = "q4_1", [Q5_0] = "q5_0", [Q5_1] = "q5_1", [Q8_0] = "q8_0", [Q8_1] = "q8_1",
        [Q4_K] = "q4_K", [Q5_K] = "q5_K", [Q6_K] = "q6_K", [Q8_K] = "q8_K",
    };

    private static readonly Dictionary<int, (int Block, int Bytes)> Geometry = new()
    {
        [F16] = (1, 2), [Q4_0] = (32, 18), [Q4_1] = (32, 20), [Q5_0] = (32, 22), [Q5_1] = (32, 24), [Q8_0] = (32, 34), [Q8_1] = (32, 36),
        [Q4_K] = (256, 144), [Q5_K] = (256, 176), [Q6_K] = (256, 210), [Q8_K] = (256, 292),
    };

    private static readonly Dictionary<int, int> VecDotType = new()
    {
        [Q4_0] = Q8_0, [Q5_0] = Q8_0, [Q8_0] = Q8_0, [Q4_1] = Q8_1, [Q5_1] = Q8_1, [Q4_K] = Q8_K, [Q5_K] = Q8_K, [Q6_K] = Q8_K,
    };

    private static nint s_base, s_cpu;

    private static int Main(string[] args)
    {
        string outDir = args.Length > 0 ? args[0] : Path.Combine(FindRepoRoot(), "tests", "Kernels.Tests", "Quantization", "Fixtures");
        string native = Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", "avx2");
        s_base = NativeLibrary.Load(Path.Combine(native, "libggml-base.so"));
        s_cpu = NativeLibrary.Load(Path.Combine(native, "libggml-cpu.so"));
        ((delegate* unmanaged<void>)NativeLibrary.GetExport(s_cpu, "ggml_cpu_init"))();
        Directory.CreateDirectory(outDir);

        int[] all = { F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q4_K, Q5_K, Q6_K, Q8_K };
        int[] legacy = { F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1 };
        Write(outDir, "random768", RandomRows(seed: 17, rows: 3, n: 768), 768, all);
        Write(outDir, "special256", SpecialRows(), 256, all);
        Write(outDir, "random416", RandomRows(seed: 416, rows: 2, n: 416), 416, legacy);
        Write(outDir, "random384", RandomRows(seed: 384, rows: 2, n: 384), 384, legacy);
        return 0;
    }

    /// <summary>Rows like trained weights (small Gaussian), shifted (exercises the mins), and heavy-tailed (outliers).</summary>
    private static float[] RandomRows(int seed, int rows, int n)
    {
        var rng = new Random(seed);
        double Gauss() => Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());
        var x = new float[rows * n];
        for (int r = 0; r < rows; r++)
        {
            for (int j = 0; j < n; j++)
            {
                double g = Gauss();
                x[(r * n) + j] = (r % 3) switch
                {
                    0 => (float)(0.02 * g),
                    1 => (float)(0.5 + g),
                    _ => (float)(g * Math.Exp(Gauss())),
                };
            }
        }

        return x;
    }

    /// <summary>Hand-made rows of 256: constant, zero, negative-only, tiny, huge, outlier, ramp, sparse, step.</summary>
    private static float[] SpecialRows()
    {
        var rng = new Random(256);
        double Gauss() => Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());
        var rows = new List<float[]>
        {
            Enumerable.Repeat(0.37f, 256).ToArray(),
            new float[256],
            Enumerable.Repeat(-1.25f, 256).ToArray(),
            Enumerable.Range(0, 256).Select(_ => (float)(-Math.Abs(Gauss()) - 1)).ToArray(),
            Enumerable.Range(0, 256).Select(_ => (float)(Math.Abs(Gauss()) + 2)).ToArray(),
            Enumerable.Range(0, 256).Select(_ => (float)(1e-6 * Gauss())).ToArray(),
            Enumerable.Range(0, 256).Select(_ => (float)(1e4 * Gauss())).ToArray(),
            Enumerable.Range(0, 256).Select(i => i == 77 ? 3e4f : (float)Gauss()).ToArray(),
            Enumerable.Range(0, 256).Select(i => (float)(-1 + (2.0 * i / 255))).ToArray(),
            Enumerable.Range(0, 256).Select(i => i % 37 == 5 ? (i % 2 == 0 ? 1f : -1f) : 0f).ToArray(),
            Enumerable.Range(0, 256).Select(i => i < 128 ? -0.5f : 0.75f).ToArray(),
        };
        return rows.SelectMany(r => r).ToArray();
    }

    private static void Write(string dir, string name, float[] input, int n, int[] types)
    {
        int rows = input.Length / n;
        using var fs = File.Create(Path.Combine(dir, name + ".qfix"));
        using var w = new BinaryWriter(fs);
        w.Write(Encoding.ASCII.GetBytes("QFIX"));
        w.Write(1);
        var entries = new List<(string Name, int Type, byte[] Bytes, float[] Floats)>
        {
            ("input", F32, MemoryMarshal.AsBytes(input.AsSpan()).ToArray(), Array.Empty<float>()),
        };
        var quantized = new Dictionary<int, byte[]>();
        foreach (int t in types)
        {
            byte[] q = Quantize(t, input);
            quantized[t] = q;
            entries.Add((Names[t], t, q, Dequantize(t, q, input.Length)));
        }

        // ggml's scalar dot of weight row r with row (r + 1) % rows quantized to the activation format.
        foreach (int t in types.Where(VecDotType.ContainsKey))
        {
            int vt = VecDotType[t];
            byte[] act = quantized[vt];
            long rowW = (long)n / Geometry[t].Block * Geometry[t].Bytes;
            long rowA = (long)n / Geometry[vt].Block * Geometry[vt].Bytes;
            var dots = new float[rows];
            var fn = (delegate* unmanaged<int, float*, nuint, void*, nuint, void*, nuint, int, void>)NativeLibrary.GetExport(s_cpu, $"ggml_vec_dot_{Names[t]}_{Names[vt]}_generic");
            fixed (byte* pw = quantized[t])
            fixed (byte* pa = act)
            {
                for (int r = 0; r < rows; r++)
                {
                    float s;
                    fn(n, &s, 0, pw + (r * rowW), 0, pa + (((r + 1) % rows) * rowA), 0, 1);
                    dots[r] = s;
                }
            }

            // The activation bytes are the entry of type vt itself (every case that has dots quantizes to it).
            entries.Add(("dot:" + Names[t], vt, Array.Empty<byte>(), dots));
        }

        w.Write(rows);
        w.Write(n);
        w.Write(entries.Count);
        foreach (var e in entries)
        {
            byte[] nm = Encoding.ASCII.GetBytes(e.Name);
            w.Write((ushort)nm.Length);
            w.Write(nm);
            w.Write(e.Type);
            w.Write((long)e.Bytes.Length);
            w.Write(e.Bytes);
            w.Write((long)e.Floats.Length);
            w.Write(MemoryMarshal.AsBytes(e.Floats.AsSpan()));
        }

        Console.WriteLine($"{name}: {rows} x {n}, {entries.Count} entries, {fs.Length} bytes");
    }

    private static byte[] Quantize(int type, float[] x)
    {
        var (block, bytes) = Geometry[type];
        var q = new byte[x.Length / block * bytes];
        fixed (float* px = x)
        fixed (byte* pq = q)
        {
            if (type == F16)
            {
                ((delegate* unmanaged<float*, ushort*, long, void>)NativeLibrary.GetExport(s_base, "ggml_fp32_to_fp16_row"))(px, (ushort*)pq, x.Length);
            }
            else
            {
                ((delegate* unmanaged<float*, byte*, long, void>)NativeLibrary.GetExport(s_base, $"quantize_row_{Names[type]}_ref"))(px, pq, x.Length);
            }
        }

        return q;
    }

    private static float[] Dequantize(int type, byte[] q, int count)
    {
        var y = new float[count];
        fixed (byte* pq = q)
        fixed (float* py = y)
        {
            if (type == F16)
            {
                ((delegate* unmanaged<ushort*, float*, long, void>)NativeLibrary.GetExport(s_base, "ggml_fp16_to_fp32_row"))((ushort*)pq, py, count);
            }
            else if (type == Q8_1)
            {
                // ggml has no dequantize_row_q8_1 (Q8_1 is only an activation format): no reference floats.
                return Array.Empty<float>();
            }
            else
            {
                ((delegate* unmanaged<byte*, float*, long, void>)NativeLibrary.GetExport(s_base, $"dequantize_row_{Names[type]}"))(pq, py, count);
            }
        }

        return y;
    }

    private static string FindRepoRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d != null; d = d.Parent)
        {
            if (File.Exists(Path.Combine(d.FullName, "Server.sln")))
            {
                return d.FullName;
            }
        }

        throw new InvalidOperationException("Server.sln not found above the program.");
    }
}
