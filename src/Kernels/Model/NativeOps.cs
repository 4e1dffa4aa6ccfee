using System.Runtime.CompilerServices;
using System.Numerics;

namespace MoeServer.Kernels.Model;

/// <summary>
/// Elementwise pieces of the decode path on raw fp32 memory (RMSNorm, RoPE, clamp, add). At decode each of these
/// is microseconds of work, far less than dispatching the equivalent torch ops.
/// </summary>
internal static unsafe class NativeOps
{
    /// <summary>y[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w, for rows of <paramref name="width"/> at the given strides
    /// (y may alias x).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void RmsNorm(float* x, int xStride, float* w, float* y, int yStride, int rows, int width, double eps)
    {
        for (int r = 0; r < rows; r++)
        {
            float* xr = x + (long)r * xStride;
            float* yr = y + (long)r * yStride;
            double ss = 0;
            int i = 0;
            if (Vector.IsHardwareAccelerated)
            {
                var acc = Vector<float>.Zero;
                for (; i + Vector<float>.Count <= width; i += Vector<float>.Count)
                {
                    var v = *(Vector<float>*)(xr + i);
                    acc += v * v;
                }
                ss = Vector.Sum(acc);
            }
            for (; i < width; i++) ss += xr[i] * xr[i];
            float inv = (float)(1.0 / Math.Sqrt(ss / width + eps));
            i = 0;
            if (Vector.IsHardwareAccelerated)
            {
                var vi = new Vector<float>(inv);
                for (; i + Vector<float>.Count <= width; i += Vector<float>.Count)
                    *(Vector<float>*)(yr + i) = *(Vector<float>*)(xr + i) * vi * *(Vector<float>*)(w + i);
            }
            for (; i < width; i++) yr[i] = xr[i] * inv * w[i];
        }
    }

    /// <summary>RoPE (half rotation) in place on <paramref name="heads"/> consecutive heads of one row.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Rope(float* x, int heads, int headDim, float* cos, float* sin)
    {
        int half = headDim / 2;
        for (int h = 0; h < heads; h++)
        {
            float* p = x + h * headDim;
            for (int i = 0; i < half; i++)
            {
                float a = p[i], b = p[i + half];
                p[i] = a * cos[i] - b * sin[i];
                p[i + half] = b * cos[i] + a * sin[i];
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Clamp(float* x, int n, float limit)
    {
        for (int i = 0; i < n; i++) x[i] = Math.Clamp(x[i], -limit, limit);
    }

    /// <summary>y = a + b elementwise (y may alias a or b).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Add(float* a, float* b, float* y, long n)
    {
        long i = 0;
        if (Vector.IsHardwareAccelerated)
            for (; i + Vector<float>.Count <= n; i += Vector<float>.Count)
                *(Vector<float>*)(y + i) = *(Vector<float>*)(a + i) + *(Vector<float>*)(b + i);
        for (; i < n; i++) y[i] = a[i] + b[i];
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Scale(float* x, int n, float s)
    {
        for (int i = 0; i < n; i++) x[i] *= s;
    }

    /// <summary>y += a * x over n floats.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Axpy(float a, float* x, float* y, int n)
    {
        int i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            var va = new Vector<float>(a);
            for (; i + Vector<float>.Count <= n; i += Vector<float>.Count)
                *(Vector<float>*)(y + i) += va * *(Vector<float>*)(x + i);
        }
        for (; i < n; i++) y[i] += a * x[i];
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Dot(float* a, float* b, int n)
    {
        int i = 0;
        float s = 0;
        if (Vector.IsHardwareAccelerated)
        {
            var acc = Vector<float>.Zero;
            for (; i + Vector<float>.Count <= n; i += Vector<float>.Count)
                acc += *(Vector<float>*)(a + i) * *(Vector<float>*)(b + i);
            s = Vector.Sum(acc);
        }
        for (; i < n; i++) s += a[i] * b[i];
        return s;
    }
}
