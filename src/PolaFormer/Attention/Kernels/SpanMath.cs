using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace PolaFormer.Attention.Kernels;

/// <summary>The two vector loops the CPU kernels are built from.</summary>
internal static class SpanMath
{
    /// <summary>acc[i] += w · src[i].</summary>
    public static void MultiplyAdd(Span<float> acc, ReadOnlySpan<float> src, float w)
    {
        int n = acc.Length, i = 0;
        ref float a = ref MemoryMarshal.GetReference(acc);
        ref float s = ref MemoryMarshal.GetReference(src);
        if (Vector.IsHardwareAccelerated)
        {
            var wv = new Vector<float>(w);
            for (; i <= n - Vector<float>.Count; i += Vector<float>.Count)
            {
                var va = Vector.LoadUnsafe(ref a, (nuint)i);
                var vs = Vector.LoadUnsafe(ref s, (nuint)i);
                Vector.FusedMultiplyAdd(vs, wv, va).StoreUnsafe(ref a, (nuint)i);
            }
        }
        for (; i < n; i++) Unsafe.Add(ref a, i) = MathF.FusedMultiplyAdd(Unsafe.Add(ref s, i), w, Unsafe.Add(ref a, i));
    }

    /// <summary>Σ x[i] · y[i], accumulated in double.</summary>
    public static double Dot(ReadOnlySpan<float> x, ReadOnlySpan<float> y)
    {
        int n = x.Length, i = 0;
        ref float a = ref MemoryMarshal.GetReference(x);
        ref float b = ref MemoryMarshal.GetReference(y);
        double total = 0;
        if (Vector.IsHardwareAccelerated)
        {
            // Float lanes over short stretches, flushed to double so long planes keep their precision.
            const int Flush = 1024;
            while (i <= n - Vector<float>.Count)
            {
                var acc = Vector<float>.Zero;
                int end = Math.Min(n - Vector<float>.Count, i + Flush);
                for (; i <= end; i += Vector<float>.Count)
                    acc = Vector.FusedMultiplyAdd(Vector.LoadUnsafe(ref a, (nuint)i), Vector.LoadUnsafe(ref b, (nuint)i), acc);
                total += Vector.Sum(acc);
            }
        }
        for (; i < n; i++) total += (double)Unsafe.Add(ref a, i) * Unsafe.Add(ref b, i);
        return total;
    }
}
