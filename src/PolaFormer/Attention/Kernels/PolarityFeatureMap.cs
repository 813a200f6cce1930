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
        if (x.stride(3) != 1) x = x.contiguous();
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

    /// <summary>
    /// Rows (b, head, token) of x (B, heads, N, d), each d contiguous floats at a strided offset, walked in blocks of
    /// up to <see cref="TokensPerBlock"/> consecutive tokens of one (b, head): a block's rows share their exponents,
    /// sit one token stride apart in x and are consecutive in the (B, heads, N, 2d) output, so no row needs index
    /// arithmetic of its own.
    /// </summary>
    private readonly record struct Layout(int Heads, int Tokens, int D, long BatchStride, long HeadStride, long TokenStride, int BlocksPerHead, int Blocks)
    {
        public long Elements => (long)Blocks / BlocksPerHead * Tokens * D;

        /// <summary>Head, first row (in (b, head, token) order) and row count of a block.</summary>
        public (int Head, long FirstRow, int Rows) Block(int block)
        {
            int slab = block / BlocksPerHead, first = block % BlocksPerHead * TokensPerBlock;
            return (slab % Heads, (long)slab * Tokens + first, Math.Min(TokensPerBlock, Tokens - first));
        }

        /// <summary>Offset in x (in floats from its first element) of the first row of a block.</summary>
        public long Offset(int block)
        {
            int slab = block / BlocksPerHead, first = block % BlocksPerHead * TokensPerBlock;
            return slab / Heads * BatchStride + slab % Heads * HeadStride + first * TokenStride;
        }

        public static Layout Of(Tensor x)
        {
            int tokens = (int)x.shape[2], perHead = (tokens + TokensPerBlock - 1) / TokensPerBlock;
            return new((int)x.shape[1], tokens, (int)x.shape[3], x.stride(0), x.stride(1), x.stride(2),
                perHead, (int)(x.shape[0] * x.shape[1]) * perHead);
        }
    }

    // A fixed block size, not one derived from the thread count: the exponent gradient is summed block by block in
    // block order, so the same inputs give the same bits on any number of threads.
    private const int TokensPerBlock = 64;

    private static unsafe void Forward(Tensor x, float[] exponents, Tensor output)
    {
        var layout = Layout.Of(x);
        using var scope = NewDisposeScope();
        float* xs = TensorMemory.Floats(x), os = TensorMemory.Floats(output);
        KernelThreads.For(layout.Blocks, KernelThreads.ThreadsFor(layout.Elements), block =>
        {
            var (head, firstRow, rows) = layout.Block(block);
            int d = layout.D;
            var p = new ReadOnlySpan<float>(exponents, head * d, d);
            float* input = xs + layout.Offset(block), features = os + firstRow * 2 * d;
            for (int r = 0; r < rows; r++, input += layout.TokenStride, features += 2 * d)
                FeatureRow(new ReadOnlySpan<float>(input, d), p, new Span<float>(features, d), new Span<float>(features + d, d));
        });
    }

    /// <summary>positive = x &gt; 0 ? |x|^p : 0, negative = x &lt; 0 ? |x|^p : 0; NaN in both.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
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
                // A NaN goes to both streams, as relu(NaN)^p and relu(−NaN)^p do on the Reference path.
                var nan = ~Vector256.Equals(xv, xv);
                Vector256.ConditionalSelect(Vector256.GreaterThan(xv, Vector256<float>.Zero) | nan, magnitude, Vector256<float>.Zero)
                    .StoreUnsafe(ref posr, (nuint)i);
                Vector256.ConditionalSelect(Vector256.LessThan(xv, Vector256<float>.Zero) | nan, magnitude, Vector256<float>.Zero)
                    .StoreUnsafe(ref negr, (nuint)i);
            }
        }
        for (; i < x.Length; i++)
        {
            float magnitude = x[i] == 0 ? 0f : (float)Math.Pow(Math.Abs((double)x[i]), p[i]);
            positive[i] = x[i] > 0 || float.IsNaN(x[i]) ? magnitude : 0f;
            negative[i] = x[i] < 0 || float.IsNaN(x[i]) ? magnitude : 0f;
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
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
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
        int d = layout.D;
        var partial = new double[(long)layout.Blocks * d];   // per block: the exponent gradient of its head
        using var scope = NewDisposeScope();
        float* xs = TensorMemory.Floats(x), os = TensorMemory.Floats(output), gs = TensorMemory.Floats(g), gxs = TensorMemory.Floats(gradX);
        KernelThreads.For(layout.Blocks, KernelThreads.ThreadsFor(layout.Elements), block =>
        {
            var (head, firstRow, rows) = layout.Block(block);
            var p = new ReadOnlySpan<float>(exponents, head * d, d);
            var sums = partial.AsSpan(block * d, d);
            float* input = xs + layout.Offset(block);
            long offset = firstRow * 2 * d;
            float* features = os + offset, gradFeatures = gs + offset, gradInput = gxs + firstRow * d;
            for (int r = 0; r < rows; r++, input += layout.TokenStride, features += 2 * d, gradFeatures += 2 * d, gradInput += d)
            {
                GradientRow(new ReadOnlySpan<float>(input, d), new ReadOnlySpan<float>(features, 2 * d),
                    new ReadOnlySpan<float>(gradFeatures, 2 * d), p, new Span<float>(gradInput, d), sums);
            }
        });
        // Blocks are added in order, so the result does not depend on the thread schedule.
        var total = new double[layout.Heads * d];
        for (int block = 0; block < layout.Blocks; block++)
        {
            var target = total.AsSpan(layout.Block(block).Head * d, d);
            var sums = partial.AsSpan(block * d, d);
            for (int i = 0; i < d; i++) target[i] += sums[i];
        }
        return Array.ConvertAll(total, v => (float)v);
    }
}
