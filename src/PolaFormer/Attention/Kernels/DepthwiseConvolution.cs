using System.Buffers;
using TorchSharp;
using static TorchSharp.torch;

namespace PolaFormer.Attention.Kernels;

/// <summary>
/// A depthwise K × K convolution ("same" zero padding, stride 1) for float32 CPU tensors, forward and backward.
/// LibTorch's CPU depthwise convolution spends most of the polarity layer's backward pass (7.4 of 14 ms at N = 3,136,
/// measured); this kernel pads each plane once and then runs one long fused multiply–add per kernel tap over the
/// flattened, padded plane, which vectorises fully. Other dtypes and devices use <c>conv2d</c>.
/// </summary>
internal static class DepthwiseConvolution
{
    /// <summary>conv2d(x, weight, bias, padding = K/2, groups = C) for x (B, C, H, W), weight (C, 1, K, K).</summary>
    public static Tensor Apply(Tensor x, Tensor weight, Tensor? bias)
    {
        if (!Supported(x, weight, bias))
            return nn.functional.conv2d(x, weight, bias, padding: [weight.shape[2] / 2, weight.shape[3] / 2], groups: weight.shape[0]);
        return bias is null ? Function.apply(x.contiguous(), weight.contiguous()) : Function.apply(x.contiguous(), weight.contiguous(), bias.contiguous());
    }

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
            var output = empty_like(x);
            Forward(x, weight, bias, output);
            return output;
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
        {
            var saved = ctx.get_saved_variables();
            var (x, weight) = (saved[0], saved[1]);
            bool hasBias = saved.Count > 2;
            var g = gradOutput.contiguous();
            var gradX = empty_like(x);
            var gradW = zeros_like(weight);
            var gradB = hasBias ? zeros(weight.shape[0], dtype: ScalarType.Float32) : null;
            Backward(x, weight, g, gradX, gradW, gradB);
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

    private static int Workers(int planes) => Math.Max(1, Math.Min(planes, torch.get_num_threads()));

    private static unsafe void Forward(Tensor x, Tensor weight, Tensor? bias, Tensor output)
    {
        var geo = Geometry.Of(x, weight);
        fixed (byte* px = x.bytes, pw = weight.bytes, po = output.bytes)
        fixed (byte* pb = bias is null ? default : bias.bytes)
        {
            float* xs = (float*)px, ws = (float*)pw, os = (float*)po, bs = (float*)pb;
            Parallel.For(0, geo.Planes, new ParallelOptions { MaxDegreeOfParallelism = Workers(geo.Planes) }, () => Rent(geo), (plane, _, buffers) =>
            {
                var (padded, rows) = buffers;
                int c = plane % geo.Channels;
                Pad(new ReadOnlySpan<float>(xs + (long)plane * geo.Plane, geo.Plane), padded, geo);
                rows.AsSpan(0, geo.RowsLength).Fill(bs is null ? 0f : bs[c]);
                var acc = rows.AsSpan(0, geo.RowsLength);
                for (int ky = 0; ky < geo.K; ky++)
                    for (int kx = 0; kx < geo.K; kx++)
                        SpanMath.MultiplyAdd(acc, padded.AsSpan(ky * geo.Wp + kx, geo.RowsLength), ws[(c * geo.K + ky) * geo.K + kx]);
                Crop(acc, new Span<float>(os + (long)plane * geo.Plane, geo.Plane), geo);
                return buffers;
            }, Return);
        }
    }

    private static unsafe void Backward(Tensor x, Tensor weight, Tensor g, Tensor gradX, Tensor gradW, Tensor? gradB)
    {
        var geo = Geometry.Of(x, weight);
        int taps = geo.K * geo.K;
        var weightGrad = new double[geo.Channels * taps];
        var biasGrad = new double[geo.Channels];
        var gate = new object();
        fixed (byte* px = x.bytes, pw = weight.bytes, pg = g.bytes, pgx = gradX.bytes)
        {
            float* xs = (float*)px, ws = (float*)pw, gs = (float*)pg, gxs = (float*)pgx;
            Parallel.For(0, geo.Planes, new ParallelOptions { MaxDegreeOfParallelism = Workers(geo.Planes) },
                () => (Buffers: Rent(geo), Extra: ArrayPool<float>.Shared.Rent(geo.PaddedLength), W: new double[geo.Channels * taps], B: new double[geo.Channels]),
                (plane, _, local) =>
                {
                    var (paddedX, rows) = local.Buffers;
                    var paddedG = local.Extra;
                    int c = plane % geo.Channels;
                    var gPlane = new ReadOnlySpan<float>(gs + (long)plane * geo.Plane, geo.Plane);

                    // Input gradient: correlation of the padded output gradient with the flipped kernel.
                    Pad(gPlane, paddedG, geo);
                    var acc = rows.AsSpan(0, geo.RowsLength);
                    acc.Clear();
                    for (int ky = 0; ky < geo.K; ky++)
                        for (int kx = 0; kx < geo.K; kx++)
                            SpanMath.MultiplyAdd(acc, paddedG.AsSpan((geo.K - 1 - ky) * geo.Wp + (geo.K - 1 - kx), geo.RowsLength),
                                ws[(c * geo.K + ky) * geo.K + kx]);
                    Crop(acc, new Span<float>(gxs + (long)plane * geo.Plane, geo.Plane), geo);

                    // Weight gradient: dot products of the output gradient (laid out with the padded row stride,
                    // zeros in the extra columns) with the shifted padded input.
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
                            local.W[c * taps + ky * geo.K + kx] += SpanMath.Dot(gRows, paddedX.AsSpan(ky * geo.Wp + kx, geo.RowsLength));
                    local.B[c] += planeSum;
                    return local;
                },
                local =>
                {
                    Return(local.Buffers);
                    ArrayPool<float>.Shared.Return(local.Extra);
                    lock (gate)
                    {
                        for (int i = 0; i < weightGrad.Length; i++) weightGrad[i] += local.W[i];
                        for (int i = 0; i < biasGrad.Length; i++) biasGrad[i] += local.B[i];
                    }
                });
        }
        var gw = gradW.bytes;
        var gwf = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(gw);
        for (int i = 0; i < weightGrad.Length; i++) gwf[i] = (float)weightGrad[i];
        if (gradB is not null)
        {
            var gbf = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(gradB.bytes);
            for (int i = 0; i < biasGrad.Length; i++) gbf[i] = (float)biasGrad[i];
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

    /// <summary>Copies the W valid columns of each padded-stride row out.</summary>
    private static void Crop(ReadOnlySpan<float> rows, Span<float> plane, Geometry geo)
    {
        for (int y = 0; y < geo.H; y++) rows.Slice(y * geo.Wp, geo.W).CopyTo(plane.Slice(y * geo.W, geo.W));
    }
}
