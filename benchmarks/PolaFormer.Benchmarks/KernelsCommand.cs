using System.Text.Json;
using PolaFormer.Attention.Kernels;
using static TorchSharp.torch;

namespace PolaFormer.Benchmarks;

/// <summary><c>kernels --tokens N --channels C --planes P --threads T</c>: the C# CPU kernels against the LibTorch
/// operators they replace, interleaved, forward + backward.</summary>
internal static class KernelsCommand
{
    public static int Run(Arguments args)
    {
        long tokens = args.Int("tokens", 3136), channels = args.Int("channels", 32), planes = args.Int("planes", 2);
        int threads = (int)args.Int("threads", 2);
        long side = (long)Math.Round(Math.Sqrt(tokens));
        set_num_threads(threads);
        var x = randn(planes, channels, side, side);
        var weight = randn(channels, 1, 5, 5);
        var bias = randn(channels);
        var r = randn(planes, channels, side, side);

        void Step(Func<Tensor, Tensor, Tensor, Tensor> conv)
        {
            using var scope = NewDisposeScope();
            var xx = x.detach().requires_grad_(true);
            var ww = weight.detach().requires_grad_(true);
            var bb = bias.detach().requires_grad_(true);
            (conv(xx, ww, bb) * r).sum().backward();
        }

        for (int round = 0; round < 2; round++)
        {
            foreach (var (name, conv) in new (string, Func<Tensor, Tensor, Tensor, Tensor>)[]
                     {
                         ("dwc-libtorch", (a, w, b) => nn.functional.conv2d(a, w, b, padding: [2, 2], groups: channels)),
                         ("dwc-csharp", (a, w, b) => DepthwiseConvolution.Apply(a, w, b)),
                     })
            {
                foreach (var mode in new[] { "fwd", "fwdbwd" })
                {
                    var result = mode == "fwd"
                        ? Timing.Measure(() => { using var scope = NewDisposeScope(); using var noGrad = no_grad(); conv(x, weight, bias); })
                        : Timing.Measure(() => Step(conv));
                    Console.WriteLine(JsonSerializer.Serialize(new
                    {
                        benchmark = "kernel", kernel = name, round, tokens, channels, planes, threads, mode,
                        median_ms = result.MedianMs, min_ms = result.MinMs, iterations = result.Iterations,
                    }, RunInfo.Json));
                }
            }
        }
        return 0;
    }
}
