using System.Text.Json;
using PolaFormer.Attention;
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
        if (mode is not ("fwd" or "fwdbwd")) throw new ArgumentException($"--mode is '{mode}'; expected fwd or fwdbwd.");
        long side = (long)Math.Round(Math.Sqrt(tokens));
        if (side * side != tokens) throw new ArgumentException($"--tokens is {tokens}; expected a square number (the layer runs on a side × side grid).");

        torch.set_num_threads(threads);
        manual_seed(0);
        long baseline = Measurement.CurrentRss();
        TokenAttention layer = impl switch
        {
            "pola" => new PolaLinearAttention(dim, (side, side), heads, qkvBias: true, implementation: PolarityImplementation.Fast),
            "pola-reference" => new PolaLinearAttention(dim, (side, side), heads, qkvBias: true, implementation: PolarityImplementation.Reference),
            "softmax" => new SpatialReductionAttention(dim, heads, qkvBias: true),
            _ => throw new ArgumentException($"--impl is '{impl}'; expected pola, pola-reference or softmax."),
        };
        if (impl != "softmax") RandomisePolarityParameters(layer);
        var x = randn(batch, tokens, dim);
        var r = randn(batch, tokens, dim);
        if (mode == "fwd") layer.eval(); else layer.train();

        var timing = TimingOptions.From(args, new TimingOptions());
        var result = Measurement.Time(() =>
        {
            using var scope = NewDisposeScope();
            if (mode == "fwd")
            {
                using var noGrad = no_grad();
                layer.forward(x, side, side);
            }
            else
            {
                var input = x.detach().requires_grad_(true);
                (layer.forward(input, side, side) * r).sum().backward();
                layer.zero_grad();
            }
        }, timing);

        var report = new
        {
            benchmark = "attention", impl, tokens, dim, heads, batch, mode, threads,
            median_ms = result.MedianMs, min_ms = result.MinMs, max_ms = result.MaxMs, iterations = result.Iterations,
            warmup_iterations = result.WarmupIterations,
            peak_rss_bytes = result.PeakRssBytes, baseline_rss_bytes = baseline, peak_extra_bytes = result.PeakRssBytes - baseline,
            torch_version = torch.__version__, runtime = Measurement.TorchSharpVersion, cpu_runtime = Measurement.CpuRuntime, blas = Measurement.BlasLibraries(), language = "csharp",
        };
        Report.Print(report, args.Flag("json"));
        return 0;
    }

    /// <summary>The layer's polarity parameters start at zero; spread them as trained ones are so the power is
    /// not the trivial 3 everywhere.</summary>
    private static void RandomisePolarityParameters(nn.Module layer)
    {
        using var noGrad = no_grad();
        foreach (var (name, p) in layer.named_parameters())
            if (name is "power" or "scale" or "positional_encoding") p.copy_(randn_like(p) * (name == "power" ? 1.0 : 0.5));
    }
}
