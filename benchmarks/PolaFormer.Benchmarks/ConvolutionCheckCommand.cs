using TorchSharp;
using static TorchSharp.torch;

namespace PolaFormer.Benchmarks;

/// <summary>
/// <c>conv-check --json</c>: LibTorch's float32 CPU convolution against float64 for a range of input widths, on this
/// machine, with oneDNN on and off (exit code 1 when oneDNN's is wrong). LibTorch 2.10's oneDNN AVX-512 kernels return wrong values on some CPUs when the width is above 16 and not
/// a multiple of 16 (README § Known issues); this shows whether the machine at hand is one of them.
/// </summary>
internal static class ConvolutionCheckCommand
{
    public static int Run(Arguments args)
    {
        torch.set_num_threads((int)args.Int("threads", 2));
        int wrong = 0;
        bool? configured = TorchRuntime.OneDnnEnabled;
        foreach (bool oneDnn in new[] { true, false })
        foreach (int width in new[] { 3, 8, 12, 16, 20, 24, 32, 40, 48, 64, 96 })
        {
            if (!TorchRuntime.SetOneDnnEnabled(oneDnn)) throw new ArgumentException("this LibTorch does not expose its oneDNN switch.");
            using var scope = NewDisposeScope();
            var generator = new Generator(11);
            var x = randn([4, width, 4, 4], generator: generator);
            var weight = randn([32, width, 2, 2], generator: generator) / Math.Sqrt(width * 4);
            var bias = randn([32], generator: generator);
            var y = nn.functional.conv2d(x, weight, bias, strides: [2, 2]);
            var reference = nn.functional.conv2d(x.to(ScalarType.Float64), weight.to(ScalarType.Float64), bias.to(ScalarType.Float64), strides: [2, 2]);
            double error = (y.to(ScalarType.Float64) - reference).abs().max().item<double>();
            bool correct = error < 1e-4;
            if (!correct && oneDnn) wrong++;
            Report.Print(new
            {
                benchmark = "conv-check", input_channels = width, output_channels = 32, kernel = 2, stride = 2,
                onednn = oneDnn, max_abs_error = error, correct,
                onednn_max_cpu_isa = Environment.GetEnvironmentVariable("ONEDNN_MAX_CPU_ISA"),
                torch_version = torch.__version__, runtime = RunInfo.TorchSharpVersion, language = "csharp",
            }, args.Flag("json"));
        }
        if (configured is bool state) TorchRuntime.SetOneDnnEnabled(state);
        return wrong == 0 ? 0 : 1;
    }
}
