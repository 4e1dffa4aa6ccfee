using System.Runtime.InteropServices;
using MoeServer.Kernels.Formats;
using TorchSharp;
using static TorchSharp.torch;

namespace MoeServer.Kernels.Model;

/// <summary>Raw access to tensor storage, so weights go from the mapped file into a tensor with one copy.</summary>
public static unsafe partial class TorchInterop
{
    [LibraryImport("LibTorchSharp")]
    private static partial IntPtr THSTensor_data(IntPtr handle);

    /// <summary>Pointer to the first element of a contiguous CPU tensor.</summary>
    public static void* DataPointer(Tensor t)
    {
        if (!t.is_contiguous()) throw new ArgumentException("tensor must be contiguous", nameof(t));
        if (t.device_type != DeviceType.CPU) throw new ArgumentException("tensor must be on the CPU", nameof(t));
        var p = THSTensor_data(t.Handle);
        if (p == IntPtr.Zero) torch.CheckForErrors();
        return (void*)p;
    }

    public static ScalarType ToScalarType(this TensorDType d) => d switch
    {
        TensorDType.F32 => ScalarType.Float32,
        TensorDType.BF16 => ScalarType.BFloat16,
        _ => ScalarType.Float16,
    };

    /// <summary>Copies raw little-endian bytes into a new CPU tensor of the given dtype and shape.</summary>
    public static Tensor FromBytes(byte* src, long byteLength, ScalarType dtype, long[] shape)
    {
        var t = torch.empty(shape, dtype);
        Buffer.MemoryCopy(src, DataPointer(t), byteLength, byteLength);
        return t;
    }

    /// <summary>A contiguous fp32 view of x (an alias when it already is one); dispose it after use.</summary>
    public static Tensor ContiguousFloat32(Tensor x) =>
        x.dtype == ScalarType.Float32 && x.is_contiguous() ? x.alias() : x.to(ScalarType.Float32).contiguous();

    /// <summary>Copies a tensor's elements (any device) into a managed fp32 array.</summary>
    public static float[] ToFloatArray(Tensor t)
    {
        using var c = t.to(ScalarType.Float32).cpu().contiguous();
        var result = new float[c.numel()];
        fixed (float* dst = result)
            Buffer.MemoryCopy(DataPointer(c), dst, result.LongLength * 4, result.LongLength * 4);
        return result;
    }
}
