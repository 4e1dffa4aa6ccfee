using System.Runtime.InteropServices;
using MoeServer.Kernels.Formats.Gguf;

namespace MoeServer.Kernels.Formats;

/// <summary>Where a checkpoint tensor's bytes live: a mapped safetensors file, a mapped GGUF file, or a copy.</summary>
internal interface ITensorStore : IDisposable
{
    unsafe byte* GetPointer(TensorEntry entry);
    bool DropFromPageCache(TensorEntry entry, long offset, long length);
    double CachedFraction(TensorEntry entry, long offset, long length);
}

/// <summary>Tensors (or per-expert views of stacked tensors) inside a mapped GGUF file; entry offsets are file offsets.</summary>
internal sealed unsafe class GgufViewStore(GgufMappedFile file) : ITensorStore
{
    public byte* GetPointer(TensorEntry entry) => file.GetPointer(entry.Offset);
    public bool DropFromPageCache(TensorEntry entry, long offset, long length) => file.DropFromPageCache(entry.Offset + offset, length);
    public double CachedFraction(TensorEntry entry, long offset, long length) => file.CachedFraction(entry.Offset + offset, length);
    public void Dispose() => file.Dispose();
}

/// <summary>A GGUF q/k tensor of arch <c>llama</c>, its rows permuted back to HF order in native memory on first use.</summary>
internal sealed unsafe class UnpermutedRopeStore(GgufMappedFile file, GgufTensorInfo source, int headDim) : ITensorStore
{
    private readonly Lock _lock = new();
    private byte* _data;

    public byte* GetPointer(TensorEntry entry)
    {
        lock (_lock)
        {
            if (_data is null)
            {
                long rows = source.Ne.Length == 1 ? source.Ne[0] : source.Ne[1];
                long rowBytes = source.ByteLength / rows;
                var d = (byte*)NativeMemory.AlignedAlloc((nuint)source.ByteLength, 64);
                GgufModel.UnpermuteRope(file.GetPointer(source.Offset), d, rows, rowBytes, headDim);
                _data = d;
            }
            return _data;
        }
    }

    public bool DropFromPageCache(TensorEntry entry, long offset, long length) => true;
    public double CachedFraction(TensorEntry entry, long offset, long length) => 1.0;

    public void Dispose()
    {
        lock (_lock)
        {
            if (_data is not null) NativeMemory.AlignedFree(_data);
            _data = null;
        }
    }
}
