using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using TorchSharp;
using static TorchSharp.torch;

namespace PolaFormer.Attention.Kernels;

/// <summary>
/// The polarity feature map <c>[relu(x)^p, relu(−x)^p]</c> as one pass over memory, forward and backward, for
/// float32 CPU tensors. Built from LibTorch operators it takes about ten elementwise passes forward (abs, pow with a
/// broadcast exponent, two sign masks, two products, a concatenation) and more backward, where the power's gradient
/// alone needs a logarithm pass; here each element is read once, its power computed once in double precision
/// (log/exp on 256-bit vectors), and the exponent's gradient accumulated on the way.
/// </summary>
internal static class PolarityFeatureMap
{
    /// <summary>x (B, heads, N, d), power broadcastable to (1, heads, 1, d) → (B, heads, N, 2d).</summary>
    /// <remarks>x may be any strided view whose last dimension is contiguous (the head-split view of a projection's
    /// output, typically): rows are read in place rather than copied first.</remarks>
    public static Tensor Apply(Tensor x, Tensor power)
    {
        if (!x.is_contiguous() && !IsTokenMajor(x)) x = x.contiguous();
        if (is_grad_enabled() && (x.requires_grad || power.requires_grad)) return Function.apply(x, power);
        return Features(x, power);
    }

    private static Tensor Features(Tensor x, Tensor power)
    {
        var output = empty(x.shape[0], x.shape[1], x.shape[2], 2 * x.shape[3], dtype: ScalarType.Float32);
        Forward(x, Exponents(power, x.shape[1], x.shape[3]), output);
        return output;
    }

    internal static bool Supported(Tensor x, Tensor power) =>
        x.dtype == ScalarType.Float32 && power.dtype == ScalarType.Float32
        && x.device_type == DeviceType.CPU && power.device_type == DeviceType.CPU
        && x.dim() == 4 && x.numel() > 0 && x.numel() < int.MaxValue / 2;

    private sealed class Function : autograd.SingleTensorFunction<Function>
    {
        public override string Name => "PolaFormerPolarityFeatureMap";

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var x = (Tensor)vars[0];
            var power = (Tensor)vars[1];
            var output = Features(x, power);
            ctx.save_for_backward([x, power, output]);
            return output;
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
        {
            var saved = ctx.get_saved_variables();
            var (x, power, output) = (saved[0], saved[1], saved[2]);
            long heads = x.shape[1], d = x.shape[3];
            var exponents = Exponents(power, heads, d);
            var gradX = empty(x.shape, dtype: ScalarType.Float32);   // contiguous, whatever x's layout
            var gradExponent = Backward(x, exponents, output, gradOutput.contiguous(), gradX);
            // The exponent gradient is per (head, channel); sum it down to the shape power was given in.
            var gradPower = tensor(gradExponent, [1, heads, 1, d], dtype: ScalarType.Float32);
            gradPower = SumToShape(gradPower, power.shape);
            return [gradX, gradPower];
        }
    }

    /// <summary>The exponent per (head, channel) as a dense float array.</summary>
    private static float[] Exponents(Tensor power, long heads, long d)
    {
        using var dense = power.detach().expand(1, heads, 1, d).contiguous();
        return dense.data<float>().ToArray();
    }

    private static Tensor SumToShape(Tensor t, long[] shape)
    {
        int lead = (int)t.dim() - shape.Length;
        var dims = new List<long>();
        for (int i = 0; i < t.dim(); i++)
            if (i < lead || shape[i - lead] == 1 && t.shape[i] != 1) dims.Add(i);
        var summed = dims.Count == 0 ? t : t.sum(dims.ToArray(), keepdim: true);
        return summed.reshape(shape);
    }

    /// <summary>Rows (b, head, token) of x (B, heads, N, d), each d contiguous floats at a strided offset.</summary>
    private readonly record struct Layout(long Rows, int Heads, int Tokens, int D, long BatchStride, long HeadStride, long TokenStride)
    {
        public int Head(long row) => (int)(row / Tokens % Heads);

        /// <summary>Offset of a row's first element in x (in floats from x's first element).</summary>
        public long Offset(long row)
        {
            long token = row % Tokens, rest = row / Tokens;
            return rest / Heads * BatchStride + rest % Heads * HeadStride + token * TokenStride;
        }

        public static Layout Of(Tensor x) => new(x.shape[0] * x.shape[1] * x.shape[2], (int)x.shape[1], (int)x.shape[2],
            (int)x.shape[3], x.stride(0), x.stride(1), x.stride(2));
    }

    /// <summary>x (B, heads, N, d) is the head-split view of a contiguous (B, N, heads, d) tensor.</summary>
    private static bool IsTokenMajor(Tensor x)
    {
        long heads = x.shape[1], tokens = x.shape[2], d = x.shape[3];
        return x.stride(3) == 1 && x.stride(1) == d && x.stride(2) == heads * d && (x.shape[0] == 1 || x.stride(0) == tokens * heads * d);
    }

    /// <summary>A contiguous tensor over the same memory as x (x itself, or its token-major alias), whose bytes start
    /// at x's first element; the row offsets come from x's strides either way.</summary>
    private static Tensor ContiguousAlias(Tensor x) => x.is_contiguous() ? x.alias() : x.transpose(1, 2);

    // A fixed block size, not one derived from the thread count: the exponent gradient is summed block by block in
    // block order, so the same inputs give the same bits on any number of threads.
    private const long RowsPerBlock = 64;

    private static (int Blocks, long RowsPerBlock) Partition(long rows) => ((int)((rows + RowsPerBlock - 1) / RowsPerBlock), RowsPerBlock);

    // Below this many elements a pass takes a few microseconds: waking thread-pool workers would cost more.
    private const long ParallelThreshold = 1 << 16;

    private static ParallelOptions Workers(Layout layout) => new()
    {
        MaxDegreeOfParallelism = layout.Rows * layout.D < ParallelThreshold ? 1 : Math.Max(1, torch.get_num_threads()),
    };

    private static unsafe void Forward(Tensor x, float[] exponents, Tensor output)
    {
        var layout = Layout.Of(x);
        var (blocks, perBlock) = Partition(layout.Rows);
        using var source = ContiguousAlias(x);
        fixed (byte* px = source.bytes, po = output.bytes)
        {
            float* xs = (float*)px, os = (float*)po;
            Parallel.For(0, blocks, Workers(layout), block =>
            {
                long end = Math.Min(layout.Rows, (block + 1) * perBlock);
                for (long row = block * perBlock; row < end; row++)
                {
                    var p = exponents.AsSpan(layout.Head(row) * layout.D, layout.D);
                    var input = new ReadOnlySpan<float>(xs + layout.Offset(row), layout.D);
                    var positive = new Span<float>(os + row * 2 * layout.D, layout.D);
                    var negative = new Span<float>(os + row * 2 * layout.D + layout.D, layout.D);
                    FeatureRow(input, p, positive, negative);
                }
            });
        }
    }

    /// <summary>positive = x &gt; 0 ? |x|^p : 0, negative = x &lt; 0 ? |x|^p : 0.</summary>
    private static void FeatureRow(ReadOnlySpan<float> x, ReadOnlySpan<float> p, Span<float> positive, Span<float> negative)
    {
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            ref float xr = ref MemoryMarshal.GetReference(x);
            ref float pr = ref MemoryMarshal.GetReference(p);
            ref float posr = ref MemoryMarshal.GetReference(positive);
            ref float negr = ref MemoryMarshal.GetReference(negative);
            for (; i <= x.Length - Vector256<float>.Count; i += Vector256<float>.Count)
            {
                var xv = Vector256.LoadUnsafe(ref xr, (nuint)i);
                var magnitude = PowAbs(xv, Vector256.LoadUnsafe(ref pr, (nuint)i));
                Vector256.ConditionalSelect(Vector256.GreaterThan(xv, Vector256<float>.Zero), magnitude, Vector256<float>.Zero)
                    .StoreUnsafe(ref posr, (nuint)i);
                Vector256.ConditionalSelect(Vector256.LessThan(xv, Vector256<float>.Zero), magnitude, Vector256<float>.Zero)
                    .StoreUnsafe(ref negr, (nuint)i);
            }
        }
        for (; i < x.Length; i++)
        {
            float magnitude = x[i] == 0 ? 0f : (float)Math.Pow(Math.Abs((double)x[i]), p[i]);
            positive[i] = x[i] > 0 ? magnitude : 0f;
            negative[i] = x[i] < 0 ? magnitude : 0f;
        }
    }

    /// <summary>|x|^p for eight lanes, as exp(p·log|x|) (0 where x = 0).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> PowAbs(Vector256<float> x, Vector256<float> p)
    {
        var result = Vector256.Exp(p * Vector256.Log(Vector256.Abs(x)));
        return Vector256.ConditionalSelect(Vector256.Equals(x, Vector256<float>.Zero), Vector256<float>.Zero, result);
    }

    /// <summary>
    /// One row of the backward pass. With a = |x|^p (read back from the saved output) and g the gradient of the branch
    /// x's sign selected: dx = sign(x)·g·p·a/|x| and dp += g·a·ln|x|; zeros of x take neither branch and get 0.
    /// </summary>
    private static void GradientRow(ReadOnlySpan<float> x, ReadOnlySpan<float> output, ReadOnlySpan<float> g,
        ReadOnlySpan<float> p, Span<float> gradX, Span<double> powerSums)
    {
        int d = x.Length, i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            ref float xr = ref MemoryMarshal.GetReference(x);
            ref float outr = ref MemoryMarshal.GetReference(output);
            ref float gr = ref MemoryMarshal.GetReference(g);
            ref float pr = ref MemoryMarshal.GetReference(p);
            ref float gxr = ref MemoryMarshal.GetReference(gradX);
            ref double sr = ref MemoryMarshal.GetReference(powerSums);
            for (; i <= d - Vector256<float>.Count; i += Vector256<float>.Count)
            {
                var xv = Vector256.LoadUnsafe(ref xr, (nuint)i);
                var positive = Vector256.GreaterThan(xv, Vector256<float>.Zero);
                var nonzero = ~Vector256.Equals(xv, Vector256<float>.Zero);
                var a = Vector256.LoadUnsafe(ref outr, (nuint)i) + Vector256.LoadUnsafe(ref outr, (nuint)(d + i));
                var gsel = Vector256.ConditionalSelect(positive, Vector256.LoadUnsafe(ref gr, (nuint)i), Vector256.LoadUnsafe(ref gr, (nuint)(d + i)));
                var magnitude = Vector256.Abs(xv);
                var sign = Vector256.ConditionalSelect(positive, Vector256.Create(1f), Vector256.Create(-1f));
                var dx = sign * gsel * Vector256.LoadUnsafe(ref pr, (nuint)i) * (a / magnitude);
                Vector256.ConditionalSelect(nonzero, dx, Vector256<float>.Zero).StoreUnsafe(ref gxr, (nuint)i);

                // The exponent's gradient term g·a·ln|x| in float, summed in double over the rows of a block.
                var safe = Vector256.ConditionalSelect(nonzero, magnitude, Vector256.Create(1f));
                var term = Vector256.ConditionalSelect(nonzero, gsel * a * Vector256.Log(safe), Vector256<float>.Zero);
                var (low, high) = Vector256.Widen(term);
                (Vector256.LoadUnsafe(ref sr, (nuint)i) + low).StoreUnsafe(ref sr, (nuint)i);
                (Vector256.LoadUnsafe(ref sr, (nuint)(i + 4)) + high).StoreUnsafe(ref sr, (nuint)(i + 4));
            }
        }
        for (; i < d; i++)
        {
            float v = x[i];
            if (v == 0) { gradX[i] = 0; continue; }
            bool pos = v > 0;
            float a = pos ? output[i] : output[d + i];
            float gsel = pos ? g[i] : g[d + i];
            float magnitude = Math.Abs(v);
            gradX[i] = (pos ? 1f : -1f) * gsel * p[i] * (a / magnitude);
            powerSums[i] += (double)gsel * a * Math.Log(magnitude);
        }
    }

    /// <summary>Input gradient into <paramref name="gradX"/>; returns the exponent gradient per (head, channel).</summary>
    private static unsafe float[] Backward(Tensor x, float[] exponents, Tensor output, Tensor g, Tensor gradX)
    {
        var layout = Layout.Of(x);
        var (blocks, perBlock) = Partition(layout.Rows);
        int width = layout.Heads * layout.D;
        var partial = new double[(long)blocks * width];
        using var source = ContiguousAlias(x);
        fixed (byte* px = source.bytes, po = output.bytes, pg = g.bytes, pgx = gradX.bytes)
        {
            float* xs = (float*)px, os = (float*)po, gs = (float*)pg, gxs = (float*)pgx;
            Parallel.For(0, blocks, Workers(layout), block =>
            {
                long end = Math.Min(layout.Rows, (block + 1) * perBlock);
                var sums = partial.AsSpan(block * width, width);
                for (long row = block * perBlock; row < end; row++)
                {
                    int head = layout.Head(row);
                    int d = layout.D;
                    GradientRow(
                        new ReadOnlySpan<float>(xs + layout.Offset(row), d),
                        new ReadOnlySpan<float>(os + row * 2 * d, 2 * d),
                        new ReadOnlySpan<float>(gs + row * 2 * d, 2 * d),
                        exponents.AsSpan(head * d, d),
                        new Span<float>(gxs + row * d, d),
                        sums.Slice(head * d, d));
                }
            });
        }
        // Blocks are added in order, so the result does not depend on the thread schedule.
        var total = new double[width];
        for (int b = 0; b < blocks; b++)
        {
            var sums = partial.AsSpan(b * width, width);
            for (int i = 0; i < width; i++) total[i] += sums[i];
        }
        return Array.ConvertAll(total, v => (float)v);
    }
}
