using System.Buffers;
using TorchSharp;
using static TorchSharp.torch;

namespace PolaFormer.Attention.Kernels;

/// <summary>
/// A depthwise K × K convolution ("same" zero padding, stride 1) with a faster backward pass for float32 CPU
/// tensors. LibTorch's CPU depthwise convolution is fast forward (and so for the input gradient, a convolution with
/// the flipped kernel) but slow for the weight gradient, which dominated the polarity layer's backward pass. Here the
/// weight gradient is one dot product per kernel tap between the output gradient and the zero-padded input, both
/// laid out with the padded row stride so each dot runs over one long contiguous span. Other dtypes and devices use
/// <c>conv2d</c> and LibTorch's autograd.
/// </summary>
internal static class DepthwiseConvolution
{
    /// <summary>conv2d(x, weight, bias, padding = K/2, groups = C) for x (B, C, H, W), weight (C, 1, K, K).</summary>
    public static Tensor Apply(Tensor x, Tensor weight, Tensor? bias)
    {
        // Without gradients LibTorch's convolution is all there is to it; it is also fastest on x as given (the
        // callers pass a channels-last view), so no contiguous copy is made.
        if (!Supported(x, weight, bias) || !NeedsGradient(x, weight, bias))
            return Convolve(x, weight, bias);
        return bias is null ? Function.apply(x, weight.contiguous()) : Function.apply(x, weight.contiguous(), bias.contiguous());
    }

    private static bool NeedsGradient(Tensor x, Tensor weight, Tensor? bias) =>
        is_grad_enabled() && (x.requires_grad || weight.requires_grad || bias?.requires_grad == true);

    internal static bool Supported(Tensor x, Tensor weight, Tensor? bias) =>
        x.dtype == ScalarType.Float32 && weight.dtype == ScalarType.Float32 && (bias is null || bias.dtype == ScalarType.Float32)
        && x.device_type == DeviceType.CPU && weight.device_type == DeviceType.CPU
        && x.dim() == 4 && weight.dim() == 4 && weight.shape[1] == 1 && weight.shape[2] == weight.shape[3] && weight.shape[2] % 2 == 1
        && x.shape[1] == weight.shape[0] && x.numel() > 0 && x.numel() < int.MaxValue / 2;

    private sealed class Function : autograd.SingleTensorFunction<Function>
    {
        public override string Name => "PolaFormerDepthwiseConv2d";

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var x = (Tensor)vars[0];
            var weight = (Tensor)vars[1];
            var bias = vars.Length > 2 ? (Tensor)vars[2] : null;
            ctx.save_for_backward(bias is null ? [x, weight] : [x, weight, bias]);
            return Convolve(x, weight, bias);
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
        {
            var saved = ctx.get_saved_variables();
            var (x, weight) = (saved[0].contiguous(), saved[1]);   // the weight-gradient loop reads whole planes
            bool hasBias = saved.Count > 2;
            var g = gradOutput.contiguous();
            // The input gradient is a depthwise convolution of g with the flipped kernel, which LibTorch does fast;
            // only the weight gradient (a correlation of g with x per channel) needs the C# loop.
            var gradX = Convolve(g, weight.flip(2, 3), null);
            var gradW = zeros_like(weight);
            var gradB = hasBias ? zeros(weight.shape[0], dtype: ScalarType.Float32) : null;
            WeightGradient(x, weight, g, gradW, gradB);
            return hasBias ? [gradX, gradW, gradB!] : [gradX, gradW];
        }
    }

    private readonly record struct Geometry(int Planes, int Channels, int H, int W, int K)
    {
        public int R => K / 2;
        public int Wp => W + K - 1;
        public int Hp => H + K - 1;
        public int PaddedPlane => Hp * Wp;
        public int Plane => H * W;

        /// <summary>Planes per channel (batch × heads for the layers' folded input).</summary>
        public int Images => Planes / Channels;

        public static Geometry Of(Tensor x, Tensor weight) =>
            new((int)(x.shape[0] * x.shape[1]), (int)x.shape[1], (int)x.shape[2], (int)x.shape[3], (int)weight.shape[2]);
    }

    private static Tensor Convolve(Tensor x, Tensor weight, Tensor? bias) =>
        nn.functional.conv2d(x, weight, bias, padding: [weight.shape[2] / 2, weight.shape[3] / 2], groups: weight.shape[0]);

    // Planes of one channel are stacked into buffers of up to about this many floats, so small maps (a 7 × 7 stage,
    // a batch of 32 × 32 digits) cost one long dot per tap instead of one per plane. The two buffers (16 KiB each)
    // stay in the core's fast caches while all K² taps read them; larger planes go one per buffer, as before. (A
    // 256 KiB stack made Pola-Swin-T's training step slower: its 56 × 56 planes then left the L1 cache.)
    private const int StackFloats = 1 << 12;

    /// <summary>
    /// Weight and bias gradients. The planes of each channel are stacked, each zero-padded to Hp × Wp, and the output
    /// gradient is laid out the same way (zeros outside each plane's H × W), so each tap's gradient over all of them
    /// is one dot product: a plane's taps reach only into its own padding. Work items are (channel, stack); their
    /// partial sums are added in item order, so the result does not depend on how the items were spread over threads
    /// (runs are reproducible bit for bit).
    /// </summary>
    private static unsafe void WeightGradient(Tensor x, Tensor weight, Tensor g, Tensor gradW, Tensor? gradB)
    {
        var geo = Geometry.Of(x, weight);
        int taps = geo.K * geo.K;
        int perStack = Math.Clamp(StackFloats / geo.PaddedPlane, 1, geo.Images);
        int stacks = (geo.Images + perStack - 1) / perStack;
        var partial = new double[geo.Channels * stacks * (taps + 1)];   // per item: K·K weight taps, then the bias
        using (NewDisposeScope())
        {
            float* xs = TensorMemory.Floats(x), gs = TensorMemory.Floats(g);
            KernelThreads.For(geo.Channels * stacks, KernelThreads.ThreadsFor((long)geo.Planes * geo.Plane), item =>
            {
                int channel = item / stacks, first = item % stacks * perStack;
                int count = Math.Min(perStack, geo.Images - first);
                int length = count * geo.PaddedPlane;
                // Taps read up to (K − 1)·(Wp + 1) floats past the last plane.
                var paddedX = ArrayPool<float>.Shared.Rent(length + (geo.K - 1) * (geo.Wp + 1));
                var gRows = ArrayPool<float>.Shared.Rent(length);
                Array.Clear(paddedX, 0, length + (geo.K - 1) * (geo.Wp + 1));
                Array.Clear(gRows, 0, length);
                double biasSum = 0;
                for (int i = 0; i < count; i++)
                {
                    long plane = (long)(first + i) * geo.Channels + channel;
                    float* xPlane = xs + plane * geo.Plane, gPlane = gs + plane * geo.Plane;
                    int top = i * geo.PaddedPlane;
                    for (int y = 0; y < geo.H; y++)
                    {
                        new ReadOnlySpan<float>(xPlane + y * geo.W, geo.W)
                            .CopyTo(paddedX.AsSpan(top + (y + geo.R) * geo.Wp + geo.R, geo.W));
                        var gRow = new ReadOnlySpan<float>(gPlane + y * geo.W, geo.W);
                        gRow.CopyTo(gRows.AsSpan(top + y * geo.Wp, geo.W));
                        foreach (var v in gRow) biasSum += v;
                    }
                }
                var sums = partial.AsSpan(item * (taps + 1), taps + 1);
                var gSpan = gRows.AsSpan(0, length);
                for (int ky = 0; ky < geo.K; ky++)
                    for (int kx = 0; kx < geo.K; kx++)
                        sums[ky * geo.K + kx] = SpanMath.Dot(gSpan, paddedX.AsSpan(ky * geo.Wp + kx, length));
                sums[taps] = biasSum;
                ArrayPool<float>.Shared.Return(paddedX);
                ArrayPool<float>.Shared.Return(gRows);
            });
        }

        var weightGrad = new double[geo.Channels * taps];
        var biasGrad = new double[geo.Channels];
        for (int item = 0; item < geo.Channels * stacks; item++)
        {
            int c = item / stacks;
            var sums = partial.AsSpan(item * (taps + 1), taps + 1);
            for (int t = 0; t < taps; t++) weightGrad[c * taps + t] += sums[t];
            biasGrad[c] += sums[taps];
        }
        var gw = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(gradW.bytes);
        for (int i = 0; i < weightGrad.Length; i++) gw[i] = (float)weightGrad[i];
        if (gradB is not null)
        {
            var gb = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(gradB.bytes);
            for (int i = 0; i < biasGrad.Length; i++) gb[i] = (float)biasGrad[i];
        }
    }
}
