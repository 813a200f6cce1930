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
        public int PaddedLength => Hp * Wp + K - 1;   // taps read up to K − 1 floats past the last padded row
        public int RowsLength => H * Wp;
        public int Plane => H * W;

        public static Geometry Of(Tensor x, Tensor weight) =>
            new((int)(x.shape[0] * x.shape[1]), (int)x.shape[1], (int)x.shape[2], (int)x.shape[3], (int)weight.shape[2]);
    }

    private static Tensor Convolve(Tensor x, Tensor weight, Tensor? bias) =>
        nn.functional.conv2d(x, weight, bias, padding: [weight.shape[2] / 2, weight.shape[3] / 2], groups: weight.shape[0]);

    // Small maps (a few thousand pixels over all planes) are not worth waking thread-pool workers for.
    private static int Workers(Geometry geo) =>
        (long)geo.Planes * geo.Plane < 1 << 16 ? 1 : Math.Max(1, Math.Min(geo.Planes, torch.get_num_threads()));

    /// <summary>
    /// Weight and bias gradients. Each plane writes its own partial sums, which are then added in plane order, so the
    /// result does not depend on how the planes were spread over threads (runs are reproducible bit for bit).
    /// </summary>
    private static unsafe void WeightGradient(Tensor x, Tensor weight, Tensor g, Tensor gradW, Tensor? gradB)
    {
        var geo = Geometry.Of(x, weight);
        int taps = geo.K * geo.K;
        var partial = new double[geo.Planes * (taps + 1)];   // per plane: K·K weight taps, then the bias
        fixed (byte* px = x.bytes, pg = g.bytes)
        {
            float* xs = (float*)px, gs = (float*)pg;
            KernelThreads.For(geo.Planes, Workers(geo), plane =>
            {
                var (paddedX, rows) = Rent(geo);
                var gPlane = new ReadOnlySpan<float>(gs + (long)plane * geo.Plane, geo.Plane);
                var sums = partial.AsSpan(plane * (taps + 1), taps + 1);

                // The output gradient laid out with the padded row stride (zeros in the extra columns), dotted
                // with the padded input shifted by each tap.
                Pad(new ReadOnlySpan<float>(xs + (long)plane * geo.Plane, geo.Plane), paddedX, geo);
                var gRows = rows.AsSpan(0, geo.RowsLength);
                gRows.Clear();
                double planeSum = 0;
                for (int y = 0; y < geo.H; y++)
                {
                    var src = gPlane.Slice(y * geo.W, geo.W);
                    src.CopyTo(gRows.Slice(y * geo.Wp, geo.W));
                    foreach (var v in src) planeSum += v;
                }
                for (int ky = 0; ky < geo.K; ky++)
                    for (int kx = 0; kx < geo.K; kx++)
                        sums[ky * geo.K + kx] = SpanMath.Dot(gRows, paddedX.AsSpan(ky * geo.Wp + kx, geo.RowsLength));
                sums[taps] = planeSum;
                Return((paddedX, rows));
            });
        }

        var weightGrad = new double[geo.Channels * taps];
        var biasGrad = new double[geo.Channels];
        for (int plane = 0; plane < geo.Planes; plane++)
        {
            int c = plane % geo.Channels;
            var sums = partial.AsSpan(plane * (taps + 1), taps + 1);
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

    private static (float[] Padded, float[] Rows) Rent(Geometry geo) =>
        (ArrayPool<float>.Shared.Rent(geo.PaddedLength), ArrayPool<float>.Shared.Rent(geo.RowsLength));

    private static void Return((float[] Padded, float[] Rows) buffers)
    {
        ArrayPool<float>.Shared.Return(buffers.Padded);
        ArrayPool<float>.Shared.Return(buffers.Rows);
    }

    /// <summary>Copies an H × W plane into the middle of a zeroed (H + K − 1) × (W + K − 1) buffer.</summary>
    private static void Pad(ReadOnlySpan<float> plane, float[] padded, Geometry geo)
    {
        padded.AsSpan(0, geo.PaddedLength).Clear();
        for (int y = 0; y < geo.H; y++)
            plane.Slice(y * geo.W, geo.W).CopyTo(padded.AsSpan((y + geo.R) * geo.Wp + geo.R, geo.W));
    }

}
