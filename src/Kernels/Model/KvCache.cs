using TorchSharp;
using static TorchSharp.torch;

namespace MoeServer.Kernels.Model;

/// <summary>
/// One sequence's keys and values for every layer, [kvHeads, capacity, headDim] fp32, grown by doubling.
/// Keys are stored after RoPE, so a cached position never needs re-rotation.
/// </summary>
public sealed class KvCache : IDisposable
{
    private readonly Tensor?[] _k;
    private readonly Tensor?[] _v;
    private readonly int _kvHeads;
    private readonly int _headDim;
    private int _capacity;
    private bool _disposed;

    /// <summary>Tokens whose keys/values are stored (equal for every layer after a full forward).</summary>
    public int Length { get; private set; }

    /// <summary>Bytes the cache holds now (capacity, not only the filled part), the router's cache included.</summary>
    public long Bytes => 2L * _k.Length * _kvHeads * _capacity * _headDim * sizeof(float) + (Router?.Bytes ?? 0);

    /// <summary>The decoupled router's own cache (<c>readme_moe</c>), at the same positions as this one.</summary>
    public KvCache? Router { get; }

    private readonly Device? _device;

    /// <summary>On a router cache: the router's output for the token about to be appended (exact pre-gating).</summary>
    internal PreGatedToken? PreGated { get; set; }

    /// <param name="device">Where the cache lives; null is the CPU (the native decode attention reads it there).</param>
    internal KvCache(int layers, int kvHeads, int headDim, int initialCapacity = 64, Device? device = null, KvCache? router = null)
    {
        _device = device;
        Router = router;
        _k = new Tensor?[layers];
        _v = new Tensor?[layers];
        _kvHeads = kvHeads;
        _headDim = headDim;
        _capacity = Math.Max(1, initialCapacity);
    }

    /// <summary>Stores k,v ([n, kvHeads, headDim]) for positions Length..Length+n-1 of one layer and returns the
    /// keys/values of all positions so far, [kvHeads, total, headDim] views. Call <see cref="Advance"/> once per forward.</summary>
    internal (Tensor Keys, Tensor Values) Append(int layer, Tensor k, Tensor v, int start)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        long n = k.shape[0];
        int needed = checked(start + (int)n);
        if (_k[layer] is null || needed > _capacity)
        {
            int cap = _capacity;
            while (cap < needed) cap *= 2;
            if (cap != _capacity || _k[layer] is null) Resize(cap);
        }
        using (torch.no_grad())
        {
            _k[layer]!.narrow(1, start, n).copy_(k.transpose(0, 1));
            _v[layer]!.narrow(1, start, n).copy_(v.transpose(0, 1));
        }
        return (_k[layer]!.narrow(1, 0, needed), _v[layer]!.narrow(1, 0, needed));
    }

    /// <summary>Reallocates every layer at <paramref name="capacity"/> positions, keeping the filled ones (grows, or trims for <see cref="TrimTo"/>).</summary>
    private void Resize(int capacity)
    {
        for (int l = 0; l < _k.Length; l++)
        {
            var nk = torch.zeros(_kvHeads, capacity, _headDim, ScalarType.Float32, device: _device).DetachFromDisposeScope();
            var nv = torch.zeros(_kvHeads, capacity, _headDim, ScalarType.Float32, device: _device).DetachFromDisposeScope();
            if (_k[l] is { } ok && _v[l] is { } ov)
            {
                int have = (int)Math.Min(ok.shape[1], Length);
                if (have > 0)
                {
                    nk.narrow(1, 0, have).copy_(ok.narrow(1, 0, have));
                    nv.narrow(1, 0, have).copy_(ov.narrow(1, 0, have));
                }
                ok.Dispose();
                ov.Dispose();
            }
            _k[l] = nk;
            _v[l] = nv;
        }
        _capacity = capacity;
    }

    /// <summary>Stores one position's keys and values ([kvHeads*headDim] each) for a layer, growing as needed.</summary>
    internal unsafe void AppendRow(int layer, int position, float* k, float* v)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_k[layer] is null || position >= _capacity)
        {
            int cap = _capacity;
            while (cap <= position) cap *= 2;
            Resize(cap);
        }
        float* kd = (float*)TorchInterop.DataPointer(_k[layer]!);
        float* vd = (float*)TorchInterop.DataPointer(_v[layer]!);
        long bytes = _headDim * sizeof(float);
        for (int h = 0; h < _kvHeads; h++)
        {
            long at = ((long)h * _capacity + position) * _headDim;
            Buffer.MemoryCopy(k + h * _headDim, kd + at, bytes, bytes);
            Buffer.MemoryCopy(v + h * _headDim, vd + at, bytes, bytes);
        }
    }

    /// <summary>Raw cache memory of one layer for the native decode attention: [kvHeads, Capacity, headDim] fp32.</summary>
    internal unsafe (IntPtr Keys, IntPtr Values, int Capacity) Raw(int layer) =>
        ((IntPtr)TorchInterop.DataPointer(_k[layer]!), (IntPtr)TorchInterop.DataPointer(_v[layer]!), _capacity);

    internal void Advance(int newLength)
    {
        Length = newLength;
        Router?.Advance(newLength);
    }

    /// <summary>
    /// Starts this (empty) cache with the first <paramref name="length"/> positions of <paramref name="source"/> (and of
    /// its router's cache): a prompt that begins with tokens another sequence already ran skips their prefill. Keys are
    /// stored after RoPE at absolute positions, so a copied prefix is valid as is.
    /// </summary>
    public void CopyPrefixFrom(KvCache source, int length)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(source);
        if (Length != 0) throw new InvalidOperationException("the prefix goes into an empty cache");
        if (length < 0 || length > source.Length) throw new ArgumentOutOfRangeException(nameof(length), $"the source holds {source.Length} positions");
        if (source._k.Length != _k.Length || source._kvHeads != _kvHeads || source._headDim != _headDim || (source.Router is null) != (Router is null))
            throw new ArgumentException("the source cache belongs to another model", nameof(source));
        if (length == 0) return;
        int cap = _capacity;
        while (cap < length) cap *= 2;
        Resize(cap);
        using (torch.no_grad())
        {
            for (int l = 0; l < _k.Length; l++)
            {
                _k[l]!.narrow(1, 0, length).copy_(source._k[l]!.narrow(1, 0, length));
                _v[l]!.narrow(1, 0, length).copy_(source._v[l]!.narrow(1, 0, length));
            }
        }
        Length = length;
        if (Router is not null) Router.CopyPrefixFrom(source.Router!, length);
    }

    /// <summary>Keeps the first <paramref name="length"/> positions in memory sized to them (a sequence's cache has room
    /// for all the tokens it may generate; one kept for its prompt needs none).</summary>
    public void TrimTo(int length)
    {
        Truncate(length);
        if (_capacity != Math.Max(1, length) && _k[0] is not null) Resize(Math.Max(1, length));
        Router?.TrimTo(length);
    }

    /// <summary>Forgets positions from <paramref name="length"/> on (e.g. to re-run a prompt suffix).</summary>
    public void Truncate(int length)
    {
        if (length < 0 || length > Length) throw new ArgumentOutOfRangeException(nameof(length));
        Length = length;
        PreGated = null;
        Router?.Truncate(length);
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        Router?.Dispose();
        for (int l = 0; l < _k.Length; l++)
        {
            _k[l]?.Dispose();
            _v[l]?.Dispose();
            _k[l] = _v[l] = null;
        }
    }
}
