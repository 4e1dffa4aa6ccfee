using TorchSharp;
using static TorchSharp.torch;

namespace MoeServer.Kernels.Model;

/// <summary>
/// RoPE in the half-rotation ("rotate_half") layout: element i pairs with i + headDim/2.
/// cos/sin tables are computed in double and grown on demand, so any position works.
/// </summary>
public sealed class RotaryEmbedding : IDisposable
{
    private readonly int _half;
    private readonly double _theta;
    private Tensor _cos;
    private Tensor _sin;
    private float[] _cosTable = [];
    private float[] _sinTable = [];
    private int _capacity;
    private readonly Lock _growLock = new();

    public RotaryEmbedding(int headDim, double theta, int initialPositions = 4096)
    {
        _half = headDim / 2;
        _theta = theta;
        (_cos, _sin) = Build(Math.Max(16, initialPositions));
        _capacity = Math.Max(16, initialPositions);
    }

    private (Tensor Cos, Tensor Sin) Build(int positions)
    {
        var cos = new float[positions * _half];
        var sin = new float[positions * _half];
        for (int i = 0; i < _half; i++)
        {
            double inv = Math.Pow(_theta, -2.0 * i / (2 * _half));
            for (int p = 0; p < positions; p++)
            {
                double a = p * inv;
                cos[p * _half + i] = (float)Math.Cos(a);
                sin[p * _half + i] = (float)Math.Sin(a);
            }
        }
        _cosTable = cos;
        _sinTable = sin;
        return (torch.tensor(cos, [positions, _half]).DetachFromDisposeScope(),
                torch.tensor(sin, [positions, _half]).DetachFromDisposeScope());
    }

    /// <summary>The managed cos/sin tables [positions, headDim/2] covering at least <paramref name="maxPosition"/>.</summary>
    public (float[] Cos, float[] Sin) Tables(int maxPosition)
    {
        EnsureCapacity(maxPosition);
        lock (_growLock) return (_cosTable, _sinTable);
    }

    public int HalfDim => _half;

    /// <summary>cos and sin rows for the given positions, shaped [T, 1, headDim/2] to broadcast over heads.</summary>
    public (Tensor Cos, Tensor Sin) For(Tensor positions, int maxPosition)
    {
        EnsureCapacity(maxPosition);
        return (_cos.index_select(0, positions).unsqueeze(1), _sin.index_select(0, positions).unsqueeze(1));
    }

    private void EnsureCapacity(int maxPosition)
    {
        if (maxPosition >= _capacity)
        {
            lock (_growLock)
            {
                if (maxPosition >= _capacity)
                {
                    int cap = _capacity;
                    while (cap <= maxPosition) cap *= 2;
                    var (c, s) = Build(cap);
                    _cos.Dispose();
                    _sin.Dispose();
                    (_cos, _sin, _capacity) = (c, s, cap);
                }
            }
        }
    }

    /// <summary>x [T, heads, headDim] rotated by position; returns a new tensor.</summary>
    public Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        var x1 = x.narrow(2, 0, _half);
        var x2 = x.narrow(2, _half, _half);
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], 2);
    }

    public void Dispose()
    {
        _cos.Dispose();
        _sin.Dispose();
    }
}
