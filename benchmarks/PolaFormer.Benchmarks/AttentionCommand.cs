using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace PolaFormer.Benchmarks;

/// <summary>
/// <c>attention --impl pola|pola-reference|softmax --tokens N --dim D --heads H --batch B --mode fwd|fwdbwd
/// --threads T --json [--warmup W --iterations I --min-seconds S --max-seconds M]</c>: one attention layer (PVT style: polarity attention with its projections and depthwise
/// convolution, or softmax attention, no spatial reduction) on a square token grid.
/// </summary>
internal static class AttentionCommand
{
    public static int Run(Arguments args)
    {
        string impl = args.Text("impl", "pola");
        long tokens = args.Int("tokens", 3136), dim = args.Int("dim", 64), heads = args.Int("heads", 2), batch = args.Int("batch", 1);
        string mode = args.Text("mode", "fwdbwd");
        int threads = (int)args.Int("threads", 2);
        torch.set_num_threads(threads);
        manual_seed(0);
        var memory = new MemoryProbe();   // resident memory before the layer or model is built
        using var workload = new AttentionWorkload(impl, tokens, dim, heads, batch, mode);
        var result = Timing.Measure(workload.Step, TimingOptions.From(args, new TimingOptions()));

        var report = new
        {
            benchmark = "attention", impl, tokens, dim, heads, batch, mode, threads,
            median_ms = result.MedianMs, min_ms = result.MinMs, max_ms = result.MaxMs, iterations = result.Iterations,
            warmup_iterations = result.WarmupIterations,
            peak_rss_bytes = result.PeakRssBytes, baseline_rss_bytes = memory.Baseline, peak_extra_bytes = result.PeakRssBytes - memory.Baseline,
            torch_version = torch.__version__, runtime = RunInfo.TorchSharpVersion, cpu_runtime = RunInfo.CpuRuntime, kernel_threads = RunInfo.KernelThreads, blas = RunInfo.BlasLibraries(), language = "csharp",
        };
        Report.Print(report, args.Flag("json"));
        return 0;
    }
}
