using PolaFormer.Attention;
using TorchSharp;
using static TorchSharp.torch;
namespace PolaFormer.Benchmarks;
internal static class ScratchCommand
{
    public static int Run(Arguments args)
    {
        long b = args.Int("batch", 8), h = args.Int("heads", 8), n = args.Int("tokens", 49), d = args.Int("d", 64);
        torch.set_num_threads(2);
        var q = randn(b, h, n, d); var k = randn(b, h, n, d); var v = randn(b, h, n, d);
        var power = (1 + 4 * sigmoid(randn(1, h, 1, d))).detach();
        var timing = new TimingOptions(Warmup: 5, MinIterations: 30, MinSeconds: 1);
        void T(string name, Action a) { var r = Measurement.Time(() => { using var s = NewDisposeScope(); using var ng = no_grad(); a(); }, timing); Console.WriteLine($"{name,-40} {r.MedianMs,8:F3} ms (min {r.MinMs:F3})"); }
        T("core fast", () => PolarityAttention.Compute(q, k, v, power));
        T("core reference", () => PolarityAttention.Compute(q, k, v, power, implementation: PolarityImplementation.Reference));
        T("feature map kernel q", () => Attention.Kernels.PolarityFeatureMap.Apply(q, power));
        T("feature map ops q", () => PolarityAttention.SignSplitFeaturesFromOperators(q, power));
        var kf = Attention.Kernels.PolarityFeatureMap.Apply(k, power);
        T("kT v matmul", () => kf.transpose(-2, -1).matmul(v));
        T("sum", () => kf.sum([-2]));
        var rhs = randn(b, h, 2 * d, d + 2);
        T("q rhs matmul", () => kf.matmul(rhs));
        var qf = Attention.Kernels.PolarityFeatureMap.Apply(q, power);
        var kv = kf.transpose(-2, -1).matmul(v);
        var kMean = kf.sum([-2]).unsqueeze(-1);
        long half = d / 2;
        T("build rhs", () => {
            var sameSigned = cat([kv[.., .., .., ..(int)half], kMean], -1);
            var opposite = cat([kv[.., .., .., (int)half..], kMean], -1);
            opposite = cat([opposite[.., .., (int)d.., ..], opposite[.., .., ..(int)d, ..]], -2);
            cat([sameSigned, opposite], -1); });
        var y0 = qf.matmul(rhs);
        T("readout", () => { var y = y0.unflatten(y0.dim() - 1, 2, half + 1);
            var numerator = y[.., .., .., .., ..(int)half];
            var normaliser = y[.., .., .., .., (int)half..].add(1e-6);
            numerator.div(normaliser).flatten(-2); });
        T("ComputeFast direct", () => PolarityAttention.ComputeFast(q, k, v, power, 1e-6));
        var x = randn(b, n, h * d);
        long side = (long)Math.Sqrt(n);
        var layer = new PolaLinearAttention(h * d, (side, side), h, qkvBias: true);
        layer.eval();
        T("layer", () => layer.forward(x, side, side));
        var dwc = nn.Conv2d(d, d, kernel_size: 5, padding: 2, groups: d);
        var vv = v.reshape(b * h, side, side, d).permute(0, 3, 1, 2);
        T("dwc kernel Apply", () => Attention.Kernels.DepthwiseConvolution.Apply(vv, dwc.weight!, dwc.bias));
        T("dwc conv2d", () => nn.functional.conv2d(vv, dwc.weight!, dwc.bias, padding: [2, 2], groups: d));
        T("dwc conv2d contig", () => nn.functional.conv2d(vv.contiguous(), dwc.weight!, dwc.bias, padding: [2, 2], groups: d));
        {
            var qgL = nn.Linear(h * d, 2 * h * d); var kvL = nn.Linear(h * d, 2 * h * d); var projL = nn.Linear(h * d, h * d);
            var scale = zeros(1, 1, h * d); var pw = zeros(1, h, 1, d); var pe = randn(1, n, h * d);
            var laps = new double[20]; var names = new string[20];
            for (int it = 0; it < 60; it++)
            {
                using var sc = NewDisposeScope(); using var ng = no_grad();
                var sw = System.Diagnostics.Stopwatch.StartNew(); int li = 0;
                void L(string nm) { if (it >= 10) laps[li] += sw.Elapsed.TotalMilliseconds; names[li++] = nm; sw.Restart(); }
                long C = h * d;
                var qgOut = qgL.forward(x).reshape(b, n, 2, C).unbind(2); L("qg+unbind");
                var (qq, g) = (qgOut[0], qgOut[1]);
                var kvOut = kvL.forward(x).reshape(b, -1, 2, C).permute(2, 0, 1, 3); L("kv+permute");
                var (kk, vv2) = (kvOut[0], kvOut[1]); L("kv index");
                kk = kk + pe; L("k+pe");
                var softScale = nn.functional.softplus(scale); var exponent = 1 + 4 * sigmoid(pw); L("softplus, exponent");
                qq = PolaLinearAttention.SplitHeads(qq / softScale, b, n, h); L("q/scale split");
                kk = PolaLinearAttention.SplitHeads(kk / softScale, b, n, h); L("k/scale split");
                vv2 = PolaLinearAttention.SplitHeads(vv2, b, n, h); L("v split");
                var att = PolarityAttention.Compute(qq, kk, vv2, exponent); L("core");
                var o = att.transpose(1, 2).reshape(b, n, C); L("merge heads");
                var local = PolaLinearAttention.DepthwiseOverHeads(dwc, vv2, b, h, side, side, C); L("dwc");
                o = projL.forward((o + local) * g); L("gate+proj");
            }
            for (int i = 0; i < 20 && names[i] != null; i++) Console.WriteLine($"  lap {names[i],-24} {laps[i] / 50:F3} ms");
        }
        {
            var laps = new double[20]; var names = new string[20];
            for (int it = 0; it < 60; it++)
            {
                using var sc = NewDisposeScope(); using var ng = no_grad();
                var sw = System.Diagnostics.Stopwatch.StartNew(); int li = 0;
                void L(string nm) { if (it >= 10) laps[li] += sw.Elapsed.TotalMilliseconds; names[li++] = nm; sw.Restart(); }
                var qFeatures = PolarityAttention.SignSplitFeatures(q, power); L("q features");
                var kFeatures = PolarityAttention.SignSplitFeatures(k, power); L("k features");
                Tensor keyCount = tensor((double)k.shape[^2], dtype: q.dtype, device: q.device); L("keycount");
                var kv2 = kFeatures.transpose(-2, -1).matmul(v).div_(keyCount); L("kv");
                var kMean2 = kFeatures.sum([-2]).unsqueeze(-1).div_(keyCount); L("kmean");
                var sameSigned = cat([kv2[.., .., .., ..(int)half], kMean2], -1);
                var opposite = cat([kv2[.., .., .., (int)half..], kMean2], -1);
                opposite = cat([opposite[.., .., (int)d.., ..], opposite[.., .., ..(int)d, ..]], -2);
                var rhs2 = cat([sameSigned, opposite], -1); L("rhs");
                var y = qFeatures.matmul(rhs2); L("q rhs");
                y = y.unflatten(y.dim() - 1, 2, half + 1);
                var numerator = y[.., .., .., .., ..(int)half];
                var normaliser = y[.., .., .., .., (int)half..].add(1e-6);
                numerator.div(normaliser).flatten(-2); L("readout");
            }
            for (int i = 0; i < 20 && names[i] != null; i++) Console.WriteLine($"  lap {names[i],-24} {laps[i] / 50:F3} ms");
        }
        T("pow only", () => q.abs().pow(power));
        T("relu", () => nn.functional.relu(q));
        T("add", () => q.add(q));
        T("empty", () => { });
        T("tiny add", () => power.add(power));
        return 0;
    }
}
