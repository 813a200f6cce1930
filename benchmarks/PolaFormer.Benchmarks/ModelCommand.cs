using TorchSharp;
using static TorchSharp.torch;

namespace PolaFormer.Benchmarks;

/// <summary>
/// <c>model --name NAME --batch B --size S --mode infer|train --threads T --json [--flops F] [timing options]</c>:
/// images/s of a whole model on random images. <c>infer</c> is a forward in eval mode without gradients;
/// <c>train</c> is one training step (forward in train mode, cross-entropy on random labels, backward, AdamW step).
/// The model is built at its preset size and run at <c>S × S</c>, as a trained checkpoint would be.
/// </summary>
internal static class ModelCommand
{
    public static int Run(Arguments args)
    {
        var (name, batch, size, mode, threads) = ModelArguments.From(args, defaultBatch: 1);

        torch.set_num_threads(threads);
        manual_seed(0);
        var memory = new MemoryProbe();   // resident memory before the layer or model is built
        using var model = ModelZoo.Create(name);
        long parameters = model.parameters().Sum(p => p.numel());
        var images = randn(batch, 3, size, size);
        var labels = randint(0, model.NumClasses, [batch]);

        Action step;
        if (mode == "infer")
        {
            model.eval();
            step = () =>
            {
                using var scope = NewDisposeScope();
                using var noGrad = no_grad();
                model.forward(images);
            };
        }
        else
        {
            model.train();
            var optimizer = optim.AdamW(model.parameters(), lr: 1e-4, weight_decay: 0.05);
            step = () =>
            {
                using var scope = NewDisposeScope();
                optimizer.zero_grad();
                var loss = nn.functional.cross_entropy(model.forward(images), labels);
                loss.backward();
                optimizer.step();
            };
        }

        var defaults = mode == "train" || batch > 1
            ? new TimingOptions(Warmup: 2, MinIterations: 5, MinSeconds: 3)
            : new TimingOptions(Warmup: 3, MinIterations: 10, MinSeconds: 3);
        var result = Timing.Measure(step, TimingOptions.From(args, defaults));
        double imagesPerSecond = batch / (result.MedianMs / 1000);
        // FLOPs per image (multiply-accumulates of one forward, from the flops mode) turn images/s into achieved
        // throughput; a training step is counted as three forwards (forward + backward with respect to inputs
        // and weights), the usual convention.
        double flopsPerImage = args.Double("flops", double.NaN);
        double? achievedGmacs = double.IsNaN(flopsPerImage) ? null : flopsPerImage * (mode == "train" ? 3 : 1) * imagesPerSecond / 1e9;

        var report = new
        {
            benchmark = "model", name, batch, size, mode, threads,
            median_ms = result.MedianMs, min_ms = result.MinMs, max_ms = result.MaxMs, iterations = result.Iterations,
            warmup_iterations = result.WarmupIterations, images_per_s = imagesPerSecond,
            achieved_gmac_per_s = achievedGmacs, parameters,
            peak_rss_bytes = result.PeakRssBytes, baseline_rss_bytes = memory.Baseline, peak_extra_bytes = result.PeakRssBytes - memory.Baseline,
            torch_version = torch.__version__, runtime = RunInfo.TorchSharpVersion, cpu_runtime = RunInfo.CpuRuntime, kernel_threads = RunInfo.KernelThreads, blas = RunInfo.BlasLibraries(), language = "csharp",
        };
        Report.Print(report, args.Flag("json"));
        return 0;
    }
}
