using PolaFormer.Attention;
using TorchSharp;
using static TorchSharp.torch;

namespace PolaFormer.Benchmarks;

/// <summary>
/// <c>profile-attention --tokens N --dim D --heads H --batch B --threads T --json</c>: where the time of one PVT-style
/// polarity attention layer goes. Times, forward and forward+backward, the whole layer (fast and reference) and
/// its parts on tensors of the same shapes: the three projections (qg, kv: C→2C; proj: C→C), the depthwise
/// convolution over heads, and the polarity core (<see cref="PolarityAttention.Compute"/>, fast and reference).
/// What is left (softplus scale, positional encoding, power, head split, gating, reshapes) is the layer minus the
/// parts.
/// </summary>
internal static class ProfileAttentionCommand
{
    public static int Run(Arguments args)
    {
        long tokens = args.Int("tokens", 3136), dim = args.Int("dim", 64), heads = args.Int("heads", 2), batch = args.Int("batch", 1);
        int threads = (int)args.Int("threads", 2);
        long side = (long)Math.Round(Math.Sqrt(tokens)), d = dim / heads;
        if (side * side != tokens) throw new ArgumentException($"--tokens is {tokens}; expected a square number.");
        torch.set_num_threads(threads);
        manual_seed(0);
        var timing = TimingOptions.From(args, new TimingOptions(Warmup: 5, MinIterations: 15, MinSeconds: 1.5));
        bool json = args.Flag("json");

        var x = randn(batch, tokens, dim);
        var q = randn(batch, heads, tokens, d);
        var k = randn(batch, heads, tokens, d);
        var v = randn(batch, heads, tokens, d);
        var power = (1 + 4 * sigmoid(randn(1, heads, 1, d))).detach();
        var qg = nn.Linear(dim, 2 * dim);
        var kv = nn.Linear(dim, 2 * dim);
        var proj = nn.Linear(dim, dim);
        var dwc = nn.Conv2d(d, d, kernel_size: 5, padding: 2, groups: d);
        var fast = new PolaLinearAttention(dim, (side, side), heads, qkvBias: true, implementation: PolarityImplementation.Fast);
        var reference = new PolaLinearAttention(dim, (side, side), heads, qkvBias: true, implementation: PolarityImplementation.Reference);
        using (no_grad())
        {
            foreach (var layer in new[] { fast, reference })
                foreach (var (name, p) in layer.named_parameters())
                    if (name is "power" or "scale" or "positional_encoding") p.copy_(randn_like(p) * (name == "power" ? 1.0 : 0.5));
        }

        var parts = new (string Component, Func<Tensor[], Tensor> Run, Tensor[] Inputs)[]
        {
            ("layer (fast)", i => fast.forward(i[0], side, side), [x]),
            ("layer (reference)", i => reference.forward(i[0], side, side), [x]),
            ("linear qg", i => qg.forward(i[0]), [x]),
            ("linear kv", i => kv.forward(i[0]), [x]),
            ("linear proj", i => proj.forward(i[0]), [x]),
            ("dwc", i => dwc.forward(i[0].reshape(batch * heads, side, side, d).permute(0, 3, 1, 2)).reshape(batch, dim, tokens).permute(0, 2, 1), [v]),
            ("core (fast)", i => PolarityAttention.Compute(i[0], i[1], i[2], power, implementation: PolarityImplementation.Fast), [q, k, v]),
            ("core (reference)", i => PolarityAttention.Compute(i[0], i[1], i[2], power, implementation: PolarityImplementation.Reference), [q, k, v]),
        };

        foreach (var mode in new[] { "fwd", "fwdbwd" })
        {
            foreach (var (component, run, inputs) in parts)
            {
                Tensor? upstream = null;
                var result = Timing.Measure(() =>
                {
                    using var scope = NewDisposeScope();
                    if (mode == "fwd")
                    {
                        using var noGrad = no_grad();
                        run(inputs);
                        return;
                    }
                    var leaves = inputs.Select(t => t.detach().requires_grad_(true)).ToArray();
                    var y = run(leaves);
                    upstream ??= randn_like(y).DetachFromDisposeScope();
                    (y * upstream).sum().backward();
                }, timing);
                var report = new
                {
                    benchmark = "profile-attention", component, mode, tokens, dim, heads, batch, threads,
                    median_ms = result.MedianMs, min_ms = result.MinMs, iterations = result.Iterations,
                    torch_version = torch.__version__, runtime = RunInfo.TorchSharpVersion, cpu_runtime = RunInfo.CpuRuntime, kernel_threads = RunInfo.KernelThreads, language = "csharp",
                };
                Report.Print(report, json);
            }
        }
        return 0;
    }
}
