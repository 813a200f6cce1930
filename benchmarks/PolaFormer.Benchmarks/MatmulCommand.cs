using TorchSharp;
using static TorchSharp.torch;

namespace PolaFormer.Benchmarks;

/// <summary>
/// <c>matmul --size 2048 --threads T --iterations 30 --json</c>: this machine's float32 matmul throughput through
/// TorchSharp (the ceiling the model throughputs are compared with). A <c>size³</c> product is <c>size³</c>
/// multiply–accumulates, reported as GMAC/s and as GFLOP/s (2 FLOPs per MAC).
/// </summary>
internal static class MatmulCommand
{
    public static int Run(Arguments args)
    {
        long size = args.Int("size", 2048);
        int threads = (int)args.Int("threads", 2);
        torch.set_num_threads(threads);
        manual_seed(0);
        var a = randn(size, size);
        var b = randn(size, size);
        var timing = TimingOptions.From(args, new TimingOptions(Warmup: 3, MinIterations: 30, MinSeconds: 0, MaxIterations: 30));
        var result = Timing.Measure(() =>
        {
            using var product = a.mm(b);
        }, timing);
        double macs = (double)size * size * size;
        var report = new
        {
            benchmark = "matmul", size, threads, dtype = "float32",
            median_ms = result.MedianMs, min_ms = result.MinMs, max_ms = result.MaxMs, iterations = result.Iterations,
            gmac_per_s = macs / (result.MedianMs / 1000) / 1e9,
            gflop_per_s = 2 * macs / (result.MedianMs / 1000) / 1e9,
            peak_rss_bytes = result.PeakRssBytes,
            torch_version = torch.__version__, runtime = RunInfo.TorchSharpVersion, cpu_runtime = RunInfo.CpuRuntime, kernel_threads = RunInfo.KernelThreads, blas = RunInfo.BlasLibraries(), language = "csharp",
        };
        Report.Print(report, args.Flag("json"));
        return 0;
    }
}
