using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using TorchSharp;
using static TorchSharp.torch;

namespace PolaFormer.Attention.Kernels;

/// <summary>
/// The end of a polarity attention layer as one pass over memory, forward and backward, for float32 CPU tensors:
/// the readout of both streams (numerator / (normaliser + eps)), the merge of the heads into channels, the depthwise
/// convolution's term and the output gate, <c>out = (readout + local) · gate</c>. Built from LibTorch operators
/// these are five passes forward (a division with its broadcast normaliser, the head-merging copy, an addition, a
/// product) and about twice as many backward, each over a tensor of the layer's activation size.
/// </summary>
internal static class GatedReadout
{
    /// <summary>
    /// y (B, heads, N, d + 2): per head and stream, d/2 numerators followed by the normaliser (the layout
    /// <see cref="PolarityAttention"/>'s fast path produces); local (B, heads, N, d); gate (B, N, heads·d)
    /// → (B, N, heads·d).
    /// </summary>
    /// <remarks>local and gate may be strided views whose last dimension is contiguous (the convolution's
    /// channels-last output and the gate's slice of a projection); anything else is copied first.</remarks>
    public static Tensor Apply(Tensor y, Tensor local, Tensor gate, double epsilon)
    {
        // The loops below read raw memory, so the shapes are checked here rather than trusted.
        long batch = y.shape[0], heads = y.shape[1], tokens = y.shape[2], d = y.shape[3] - 2;
        if (!local.shape.SequenceEqual([batch, heads, tokens, d]))
            throw new ArgumentException($"local has shape {Check.Format(local.shape)}; expected (B={batch}, heads={heads}, N={tokens}, d={d}).", nameof(local));
        if (!gate.shape.SequenceEqual([batch, tokens, heads * d]))
            throw new ArgumentException($"gate has shape {Check.Format(gate.shape)}; expected (B={batch}, N={tokens}, C={heads * d}).", nameof(gate));
        y = y.is_contiguous() ? y : y.contiguous();
        if (local.stride(3) != 1) local = local.contiguous();
        if (gate.stride(2) != 1) gate = gate.contiguous();
        if (is_grad_enabled() && (y.requires_grad || local.requires_grad || gate.requires_grad))
            return Function.apply(y, local, gate, epsilon);
        var output = empty(gate.shape, dtype: ScalarType.Float32);
        Forward(Layout.Of(y, local, gate), y, local, gate, (float)epsilon, output);
        return output;
    }

    /// <summary>Whether the kernel serves a layer whose attention inputs are like <paramref name="queries"/>.</summary>
    internal static bool Supported(Tensor queries, Tensor local, Tensor gate) =>
        queries.dtype == ScalarType.Float32 && local.dtype == ScalarType.Float32 && gate.dtype == ScalarType.Float32
        && queries.device_type == DeviceType.CPU && local.device_type == DeviceType.CPU && gate.device_type == DeviceType.CPU
        && queries.dim() == 4 && local.numel() > 0 && local.numel() < int.MaxValue / 2;

    private sealed class Function : autograd.SingleTensorFunction<Function>
    {
        public override string Name => "PolaFormerGatedReadout";

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var (y, local, gate, epsilon) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2], (double)vars[3]);
            var output = empty(gate.shape, dtype: ScalarType.Float32);
            Forward(Layout.Of(y, local, gate), y, local, gate, (float)epsilon, output);
            ctx.save_for_backward([y, local, gate]);
            ctx.save_data("epsilon", epsilon);
            return output;
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
        {
            var saved = ctx.get_saved_variables();
            var (y, local, gate) = (saved[0], saved[1], saved[2]);
            var epsilon = (float)(double)ctx.get_data("epsilon");
            var gradY = empty(y.shape, dtype: ScalarType.Float32);
            var gradLocal = empty(local.shape, dtype: ScalarType.Float32);
            var gradGate = empty(gate.shape, dtype: ScalarType.Float32);
            Backward(Layout.Of(y, local, gate), y, local, gate, epsilon, gradOutput.contiguous(), gradY, gradLocal, gradGate);
            return [gradY, gradLocal, gradGate, null!];   // one entry per argument of apply: none for epsilon
        }
    }

    /// <summary>Shapes and strides (in floats) of the three inputs; the work is split into blocks of up to
    /// <see cref="TokensPerBlock"/> tokens of one image, all heads.</summary>
    private readonly record struct Layout(int Batch, int Heads, int Tokens, int D,
        long LocalBatch, long LocalHead, long LocalToken, long GateBatch, long GateToken)
    {
        public int Half => D / 2;
        public int Channels => Heads * D;
        public int BlocksPerImage => (Tokens + TokensPerBlock - 1) / TokensPerBlock;
        public int Blocks => Batch * BlocksPerImage;
        public long Elements => (long)Batch * Tokens * Channels;

        public (int Batch, int FirstToken, int EndToken) Block(int block)
        {
            int b = block / BlocksPerImage, first = block % BlocksPerImage * TokensPerBlock;
            return (b, first, Math.Min(Tokens, first + TokensPerBlock));
        }

        public static Layout Of(Tensor y, Tensor local, Tensor gate) => new(
            (int)y.shape[0], (int)y.shape[1], (int)y.shape[2], (int)local.shape[3],
            local.stride(0), local.stride(1), local.stride(2), gate.stride(0), gate.stride(1));
    }

    private const int TokensPerBlock = 64;

    private static unsafe void Forward(Layout layout, Tensor y, Tensor local, Tensor gate, float epsilon, Tensor output)
    {
        using var scope = NewDisposeScope();
        float* ys = TensorMemory.Floats(y), ls = TensorMemory.Floats(local), gs = TensorMemory.Floats(gate), os = TensorMemory.Floats(output);
        KernelThreads.For(layout.Blocks, KernelThreads.ThreadsFor(layout.Elements), block =>
        {
            var (b, first, end) = layout.Block(block);
            int d = layout.D, half = layout.Half, row = d + 2;
            // Head by head, so y's and local's rows are read as consecutive streams.
            for (int h = 0; h < layout.Heads; h++)
            {
                float* yRow = ys + (((long)b * layout.Heads + h) * layout.Tokens + first) * row;
                float* lRow = ls + b * layout.LocalBatch + h * layout.LocalHead + first * layout.LocalToken;
                float* gRow = gs + b * layout.GateBatch + first * layout.GateToken + h * d;
                float* oRow = os + ((long)b * layout.Tokens + first) * layout.Channels + h * d;
                for (int t = first; t < end; t++, yRow += row, lRow += layout.LocalToken, gRow += layout.GateToken, oRow += layout.Channels)
                {
                    ForwardStream(yRow, yRow[half] + epsilon, lRow, gRow, oRow, half);
                    ForwardStream(yRow + half + 1, yRow[d + 1] + epsilon, lRow + half, gRow + half, oRow + half, half);
                }
            }
        });
    }

    /// <summary>out = (numerator / normaliser + local) · gate over one stream of one head (n values).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void ForwardStream(float* numerator, float normaliser, float* local, float* gate, float* output, int n)
    {
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var den = Vector256.Create(normaliser);
            for (; i <= n - Vector256<float>.Count; i += Vector256<float>.Count)
            {
                var readout = Vector256.Load(numerator + i) / den;
                ((readout + Vector256.Load(local + i)) * Vector256.Load(gate + i)).Store(output + i);
            }
        }
        for (; i < n; i++) output[i] = (numerator[i] / normaliser + local[i]) * gate[i];
    }

    private static unsafe void Backward(Layout layout, Tensor y, Tensor local, Tensor gate, float epsilon,
        Tensor gradOutput, Tensor gradY, Tensor gradLocal, Tensor gradGate)
    {
        using var scope = NewDisposeScope();
        float* ys = TensorMemory.Floats(y), ls = TensorMemory.Floats(local), gs = TensorMemory.Floats(gate), dos = TensorMemory.Floats(gradOutput);
        float* dys = TensorMemory.Floats(gradY), dls = TensorMemory.Floats(gradLocal), dgs = TensorMemory.Floats(gradGate);
        KernelThreads.For(layout.Blocks, KernelThreads.ThreadsFor(layout.Elements), block =>
        {
            var (b, first, end) = layout.Block(block);
            int d = layout.D, half = layout.Half, row = d + 2, channels = layout.Channels;
            for (int h = 0; h < layout.Heads; h++)
            {
                long headRow = ((long)b * layout.Heads + h) * layout.Tokens + first;
                long tokenAt = ((long)b * layout.Tokens + first) * channels + h * d;
                float* yRow = ys + headRow * row, dyRow = dys + headRow * row, dlRow = dls + headRow * d;
                float* lRow = ls + b * layout.LocalBatch + h * layout.LocalHead + first * layout.LocalToken;
                float* gRow = gs + b * layout.GateBatch + first * layout.GateToken + h * d;
                float* doRow = dos + tokenAt, dgRow = dgs + tokenAt;
                for (int t = first; t < end; t++, yRow += row, dyRow += row, dlRow += d, lRow += layout.LocalToken,
                     gRow += layout.GateToken, doRow += channels, dgRow += channels)
                {
                    dyRow[half] = BackwardStream(yRow, yRow[half] + epsilon, lRow, gRow, doRow, dyRow, dlRow, dgRow, half);
                    dyRow[d + 1] = BackwardStream(yRow + half + 1, yRow[d + 1] + epsilon, lRow + half, gRow + half,
                        doRow + half, dyRow + half + 1, dlRow + half, dgRow + half, half);
                }
            }
        });
    }

    /// <summary>
    /// Gradients of one stream of one head. With a = numerator / normaliser and e = ∂L/∂out · gate:
    /// ∂numerator = e / normaliser, ∂local = e, ∂gate = ∂L/∂out · (a + local); returns
    /// ∂normaliser = −Σ ∂numerator · a.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe float BackwardStream(float* numerator, float normaliser, float* local, float* gate, float* gradOutput,
        float* gradNumerator, float* gradLocal, float* gradGate, int n)
    {
        int i = 0;
        float normaliserGrad = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var den = Vector256.Create(normaliser);
            var sum = Vector256<float>.Zero;
            for (; i <= n - Vector256<float>.Count; i += Vector256<float>.Count)
            {
                var readout = Vector256.Load(numerator + i) / den;
                var upstream = Vector256.Load(gradOutput + i);
                var gated = upstream * Vector256.Load(gate + i);
                var gradN = gated / den;
                gradN.Store(gradNumerator + i);
                gated.Store(gradLocal + i);
                (upstream * (readout + Vector256.Load(local + i))).Store(gradGate + i);
                sum -= gradN * readout;
            }
            normaliserGrad = Vector256.Sum(sum);
        }
        for (; i < n; i++)
        {
            float readout = numerator[i] / normaliser;
            float gated = gradOutput[i] * gate[i];
            gradNumerator[i] = gated / normaliser;
            gradLocal[i] = gated;
            gradGate[i] = gradOutput[i] * (readout + local[i]);
            normaliserGrad -= gradNumerator[i] * readout;
        }
        return normaliserGrad;
    }
}
