using System.Globalization;
using PolaFormer.Attention;
using PolaFormer.Attention.Kernels.Cuda;
using PolaFormer.Checkpoints;
using PolaFormer.Golden;
using TorchSharp;
using static TorchSharp.torch;

namespace PolaFormer.GpuCheck;

/// <summary>
/// <c>cuda-kernels</c>: the fused CUDA kernels of the polarity core (src/PolaFormer/Attention/Kernels/Cuda) on the GPU.
/// (a) the kernels' status line; (b) the kernels' forward and gradients (feature map, gated readout, the whole
/// <c>PolarityAttention.ComputeGated</c>) against the LibTorch-operator path evaluated in float64 on the same GPU, at
/// several shapes, outputs poisoned with NaN first and every launch synchronised and checked; (c) the golden attention
/// cases with the kernels on, at the golden tolerances; (d) the attention layer's forward + backward timed with the
/// kernels on and off, alternating, as JSON lines like <c>bench-attention</c>'s. Options: <c>--tokens</c> (timed sizes,
/// default 1024,4096,16384,65536), <c>--timing off</c> (skip d). On the CPU it prints the status (unavailable, with the
/// reason) and exits 0.
/// </summary>
internal static class CudaKernelCheck
{
    private const double Epsilon = PolarityAttention.DefaultEpsilon;
    // float32 kernels against float64 operators: float32 rounding is ~1e-7 per operation; an index or layout mistake
    // gives errors of order 1. Sums over thousands of tokens (the matmuls of the whole layer) get the looser bound.
    private const double ElementwiseOutput = 1e-5, ElementwiseGradient = 1e-4;
    private const double LayerOutput = 1e-4, LayerGradient = 1e-3;
    private const double GoldenOutput = 5e-6, GoldenGradient = 2e-5;   // as Conformance and GoldenAttentionTests

    public static int Run(Context ctx)
    {
        // This mode is about the kernels: on whatever POLAFORMER_CUDA_KERNELS says (the timing switches them itself).
        var variable = Environment.GetEnvironmentVariable(CudaKernels.SwitchVariable);
        if (!string.IsNullOrEmpty(variable)) Console.WriteLine($"# {CudaKernels.SwitchVariable}={variable} is overridden in this mode");
        CudaKernels.EnabledOverride = true;
        var status = CudaKernels.Status();
        Console.WriteLine("# " + status);
        if (!ctx.IsCuda)
        {
            CudaKernels.EnabledOverride = null;
            Console.WriteLine($"# cuda-kernels: nothing to check on {ctx.DeviceName}; the kernels serve CUDA tensors only ({(status.Available ? "available" : "unavailable: " + status.Reason)})");
            return 0;
        }
        if (!status.Available)
        {
            Console.WriteLine($"FAIL cuda-kernels: the kernels are unavailable on this GPU: {status.Reason}");
            CudaKernels.EnabledOverride = null;
            return 1;
        }

        int passed = 0, failed = 0;
        void Report(bool ok, string line)
        {
            Console.WriteLine((ok ? "PASS " : "FAIL ") + line);
            if (ok) passed++; else failed++;
        }
        void Guarded(string what, Func<(bool, string)> check)
        {
            try
            {
                var (ok, line) = check();
                Report(ok, line);
            }
            catch (Exception e)
            {
                Report(false, $"{what} threw {e.GetType().Name}: {CudaKernelRuntime.OneLine(e.Message)}");
            }
        }

        ctx.SetTf32(false);
        CudaKernels.PoisonOutputs = true;            // an element no thread writes shows up as NaN
        CudaKernels.SynchronizeAfterLaunch = true;   // a failing kernel is reported at its own launch
        try
        {
            foreach (var (b, h, n, d) in new (long, long, long, long)[] { (2, 3, 49, 32), (1, 2, 1024, 64), (2, 1, 3136, 32), (1, 4, 17, 2) })
            {
                foreach (var layout in new[] { "contiguous", "token-major" })
                    Guarded($"feature map ({b},{h},{n},{d}) {layout}", () => FeatureMap(ctx, b, h, n, d, layout));
                Guarded($"gated readout ({b},{h},{n},{d})", () => Readout(ctx, b, h, n, d));
                Guarded($"ComputeGated ({b},{h},{n},{d})", () => Layer(ctx, b, h, n, d, masked: false));
            }
            Guarded("ComputeGated (2,2,196,32) with a key mask", () => Layer(ctx, 2, 2, 196, 32, masked: true));
            Guarded("determinism", () => Deterministic(ctx));
            foreach (var (ok, line) in Golden(ctx)) Report(ok, line);
        }
        finally
        {
            CudaKernels.PoisonOutputs = false;
            CudaKernels.SynchronizeAfterLaunch = false;
        }
        Console.WriteLine($"# cuda-kernels correctness: {passed} passed, {failed} failed; {CudaKernels.Launches} kernel launches so far");

        if (ctx.Args.Text("timing", "on") != "off")
        {
            try
            {
                Time(ctx);
            }
            catch (Exception e)
            {
                Report(false, $"timing threw {e.GetType().Name}: {CudaKernelRuntime.OneLine(e.Message)}");
            }
        }
        CudaKernels.EnabledOverride = null;
        Console.WriteLine($"# cuda-kernels on {ctx.DeviceName}: {passed} passed, {failed} failed");
        return failed == 0 ? 0 : 1;
    }

    /// <summary>Runs <paramref name="body"/> and says how many kernels it launched.</summary>
    private static long Launched(Action body)
    {
        long before = CudaKernels.Launches;
        body();
        return CudaKernels.Launches - before;
    }

    private static string Errors(IEnumerable<(string Name, double Error)> errors) =>
        string.Join(", ", errors.Select(e => string.Create(CultureInfo.InvariantCulture, $"{e.Name} {e.Error:0.00E+00}")));

    private static bool Within(IEnumerable<(string Name, double Error)> errors, Func<string, double> tolerance) =>
        errors.All(e => double.IsFinite(e.Error) && e.Error <= tolerance(e.Name));

    /// <summary>x (B, heads, N, d) on the CPU from the seed: the head-split view of a (B, N, heads, d) tensor for
    /// "token-major" (read in place by the kernel), contiguous otherwise; a few exact zeros.</summary>
    private static Tensor Input(long b, long h, long n, long d, string layout, double scale = 2)
    {
        var x = layout == "token-major" ? (randn(b, n, h, d) * scale).transpose(1, 2) : randn(b, h, n, d) * scale;
        x[0, 0, 0, 0] = tensor(0f);
        return x;
    }

    private static Tensor Leaf(Tensor t, Context ctx, ScalarType dtype) => t.to(ctx.Device).to(dtype).detach().requires_grad_(true);

    /// <summary>A leaf on the device with <paramref name="t"/>'s strides (views stay views).</summary>
    private static (Tensor Leaf, Tensor Input) StridedLeaf(Tensor t, Context ctx, ScalarType dtype)
    {
        if (t.is_contiguous()) { var l = Leaf(t, ctx, dtype); return (l, l); }
        var leaf = Leaf(t.contiguous(), ctx, dtype);
        var input = empty_strided(t.shape, t.stride(), dtype: dtype, device: ctx.Device).copy_(leaf);   // differentiable copy
        return (leaf, input);
    }

    private static (bool, string) FeatureMap(Context ctx, long b, long h, long n, long d, string layout)
    {
        using var scope = NewDisposeScope();
        manual_seed(1);
        var x = Input(b, h, n, d, layout);
        var power = 1 + 4 * sigmoid(randn(1, h, 1, d));
        var r = randn(b, h, n, 2 * d);

        (Tensor Y, Tensor Gx, Tensor Gp) Run(ScalarType dtype, Func<Tensor, Tensor, Tensor> map)
        {
            var (xl, xi) = StridedLeaf(x, ctx, dtype);
            var pl = Leaf(power, ctx, dtype);
            var y = map(xi, pl);
            (y * r.to(ctx.Device).to(dtype)).sum().backward();
            return (y.detach(), xl.grad!, pl.grad!);
        }

        Tensor[] kernels = [];
        long launches = Launched(() => { var (y, gx, gp) = Run(ScalarType.Float32, PolarityAttention.SignSplitFeatures); kernels = [y, gx, gp]; });
        var (y64, gx64, gp64) = Run(ScalarType.Float64, PolarityAttention.SignSplitFeaturesFromOperators);
        var (y32, gx32, gp32) = Run(ScalarType.Float32, PolarityAttention.SignSplitFeaturesFromOperators);
        var errors = new[] { ("features", ScaledError.Of(kernels[0], y64)), ("grad.x", ScaledError.Of(kernels[1], gx64)), ("grad.power", ScaledError.Of(kernels[2], gp64)) };
        var operators = new[] { ("features", ScaledError.Of(y32, y64)), ("grad.x", ScaledError.Of(gx32, gx64)), ("grad.power", ScaledError.Of(gp32, gp64)) };
        bool ok = launches == 2 && Within(errors, name => name == "features" ? ElementwiseOutput : ElementwiseGradient);
        return (ok, $"feature map ({b},{h},{n},{d}) {layout}: {launches} launches (expected 2); kernels vs float64 [{Errors(errors)}]; float32 operators vs float64 [{Errors(operators)}]");
    }

    private static (bool, string) Readout(Context ctx, long b, long h, long n, long d)
    {
        using var scope = NewDisposeScope();
        manual_seed(2);
        var y = randn(b, h, n, d + 2);
        y[.., .., .., (int)(d / 2)] = rand(b, h, n) + 0.5;   // normalisers are positive sums of features in the layer
        y[.., .., .., (int)(d + 1)] = rand(b, h, n) + 0.5;
        var local = randn(b, h, n, d + 3)[.., .., .., ..(int)d];          // a wider tensor's first d channels, as strided as the layers pass it
        var gate = randn(b, n, 4, h * d)[.., .., 3, ..];                  // the gate's slice of a projection
        var upstream = randn(b, n, h * d);

        (Tensor Out, Tensor Gy, Tensor Gl, Tensor Gg) Run(ScalarType dtype, bool kernels)
        {
            var (yl, yi) = StridedLeaf(y, ctx, dtype);
            var (ll, li) = StridedLeaf(local, ctx, dtype);
            var (gl, gi) = StridedLeaf(gate, ctx, dtype);
            Tensor output;
            if (kernels)
            {
                if (!CudaGatedReadout.TryGetLauncher(yi, li, gi, out var launcher)) throw new InvalidOperationException("the gated readout kernel does not take float32 CUDA tensors");
                output = CudaGatedReadout.Apply(yi, li, gi, Epsilon, launcher);
            }
            else
            {
                output = ReadoutOperators(yi, li, gi);
            }
            (output * upstream.to(ctx.Device).to(dtype)).sum().backward();
            return (output.detach(), yl.grad!, ll.grad!, gl.grad!);
        }

        Tensor[] k = [];
        long launches = Launched(() => { var (o, gy, gl, gg) = Run(ScalarType.Float32, kernels: true); k = [o, gy, gl, gg]; });
        var (o64, gy64, gl64, gg64) = Run(ScalarType.Float64, kernels: false);
        var errors = new[] { ("output", ScaledError.Of(k[0], o64)), ("grad.y", ScaledError.Of(k[1], gy64)), ("grad.local", ScaledError.Of(k[2], gl64)), ("grad.gate", ScaledError.Of(k[3], gg64)) };
        bool ok = launches == 2 && Within(errors, name => name == "output" ? ElementwiseOutput : ElementwiseGradient);
        return (ok, $"gated readout ({b},{h},{n},{d}): {launches} launches (expected 2); kernels vs float64 operators [{Errors(errors)}]");
    }

    private static Tensor ReadoutOperators(Tensor y, Tensor local, Tensor gate)
    {
        long b = y.shape[0], h = y.shape[1], n = y.shape[2], half = (y.shape[3] - 2) / 2;
        var streams = y.unflatten(3, 2, half + 1);
        var readout = streams[.., .., .., .., ..(int)half].div(streams[.., .., .., .., (int)half..].add(Epsilon)).flatten(-2);
        return (readout + local).transpose(1, 2).reshape(b, n, h * 2 * half) * gate;
    }

    /// <summary>The whole of ComputeGated (feature maps of q and k, LibTorch's matmuls, gated readout) as the layers
    /// call it, against the same call in float64 (which takes the operator path).</summary>
    private static (bool, string) Layer(Context ctx, long b, long h, long n, long d, bool masked)
    {
        using var scope = NewDisposeScope();
        manual_seed(3);
        var q = Input(b, h, n, d, "token-major", scale: 1);
        var k = Input(b, h, n, d, "token-major", scale: 1);
        var v = randn(b, n, h, d).transpose(1, 2);
        var power = 1 + 4 * sigmoid(randn(1, h, 1, d));
        var local = randn(b, n, h, d).permute(0, 2, 1, 3);
        var gate = randn(b, n, 2, h * d)[.., .., 1, ..];
        var upstream = randn(b, n, h * d);
        Tensor? mask = null;
        if (masked)
        {
            mask = ones(b, n);
            mask[0, (int)(n - n / 4)..] = tensor(0f);   // the last quarter of image 0's keys is padding
        }
        string[] names = ["q", "k", "v", "power", "local", "gate"];

        (Tensor Out, Tensor[] Grads) Run(ScalarType dtype)
        {
            var leaves = new[] { q, k, v, power, local, gate }.Select(t => StridedLeaf(t, ctx, dtype)).ToArray();
            var i = leaves.Select(l => l.Input).ToArray();
            var output = PolarityAttention.ComputeGated(i[0], i[1], i[2], i[3], i[4], i[5], Epsilon, PolarityImplementation.Fast,
                mask?.to(ctx.Device), PolarityPrecision.Float32Core);
            (output * upstream.to(ctx.Device).to(dtype)).sum().backward();
            return (output.detach(), leaves.Select(l => l.Leaf.grad!).ToArray());
        }

        Tensor out32 = null!;
        Tensor[] grads32 = [];
        long launches = Launched(() => (out32, grads32) = Run(ScalarType.Float32));
        var (out64, grads64) = Run(ScalarType.Float64);
        var errors = new List<(string, double)> { ("output", ScaledError.Of(out32, out64)) };
        for (int j = 0; j < names.Length; j++) errors.Add(("grad." + names[j], ScaledError.Of(grads32[j], grads64[j])));
        // Forward: two feature maps and the readout; backward: the same three.
        bool ok = launches == 6 && Within(errors, name => name == "output" ? LayerOutput : LayerGradient);
        return (ok, $"ComputeGated ({b},{h},{n},{d}){(masked ? " masked" : "")}: {launches} launches (expected 6); kernels vs float64 operators [{Errors(errors)}]");
    }

    /// <summary>Two runs of the same inputs give the same bits (the power's gradient is summed in a fixed order).</summary>
    private static (bool, string) Deterministic(Context ctx)
    {
        using var scope = NewDisposeScope();
        manual_seed(4);
        var x = Input(2, 2, 3136, 32, "token-major");
        var power = 1 + 4 * sigmoid(randn(1, 2, 1, 32));
        var r = randn(2, 2, 3136, 64).to(ctx.Device);
        (Tensor, Tensor, Tensor) Run()
        {
            var (xl, xi) = StridedLeaf(x, ctx, ScalarType.Float32);
            var pl = Leaf(power, ctx, ScalarType.Float32);
            var y = PolarityAttention.SignSplitFeatures(xi, pl);
            (y * r).sum().backward();
            return (y.detach(), xl.grad!, pl.grad!);
        }
        var (y1, gx1, gp1) = Run();
        var (y2, gx2, gp2) = Run();
        bool same = y1.eq(y2).all().item<bool>() && gx1.eq(gx2).all().item<bool>() && gp1.eq(gp2).all().item<bool>();
        return (same, $"determinism: two runs of the feature map (2,2,3136,32) forward and backward give {(same ? "identical bits" : "DIFFERENT bits")}");
    }

    /// <summary>The golden attention cases of the polarity layers with the kernels on (the Fast implementation, the
    /// one the kernels serve), as Conformance checks them: outputs at 5e-6, gradients at 2e-5, TF32 off.</summary>
    private static IEnumerable<(bool, string)> Golden(Context ctx)
    {
        var files = Directory.Exists(ctx.GoldenFolder)
            ? Directory.EnumerateFiles(ctx.GoldenFolder, "*.safetensors").Order(StringComparer.Ordinal).ToList()
            : [];
        int checkedCases = 0;
        foreach (var file in files)
        {
            using var c = GoldenCase.Load(file);
            if (c.Kind != "attention" || !GoldenModules.IsPolarity(c)) continue;
            checkedCases++;
            (bool, string) result;
            try
            {
                result = GoldenAttention(ctx, c);
            }
            catch (Exception e)
            {
                result = (false, $"golden {c.Id} with kernels threw {e.GetType().Name}: {CudaKernelRuntime.OneLine(e.Message)}");
            }
            yield return result;
        }
        if (checkedCases == 0) yield return (false, $"golden: no polarity attention cases in {ctx.GoldenFolder}");
    }

    private static (bool, string) GoldenAttention(Context ctx, GoldenCase c)
    {
        var (module, height, width) = GoldenModules.Attention(c, PolarityImplementation.Fast);
        using var _ = module;
        StateDictLoader.Load(module, c.StateDict(), strict: true, sourceName: c.Id);
        module.to(ctx.Device);
        module.eval();

        using var scope = NewDisposeScope();
        var x = c["input.x"].to(ctx.Device).clone().requires_grad_(true);
        var mask = c.Tensors.TryGetValue("input.mask", out var m) ? m.to(ctx.Device) : null;
        Tensor y = null!;
        long launches = Launched(() =>
        {
            y = module.forward(x, height, width, mask);
            (y * c["input.R"].to(ctx.Device)).sum().backward();
        });
        double outputError = ScaledError.Of(y, c["output.y"]);
        var errors = new Dictionary<string, double> { ["grad.x"] = ScaledError.Of(x.grad!, c["grad.x"]) };
        foreach (var (name, parameter) in module.named_parameters())
        {
            if (!c.Tensors.ContainsKey("grad." + name)) continue;
            errors["grad." + name] = parameter.grad is { } g ? ScaledError.Of(g, c["grad." + name]) : double.NaN;
        }
        var worst = errors.MaxBy(e => double.IsNaN(e.Value) ? double.PositiveInfinity : e.Value);

        double noGradError;
        using (no_grad()) noGradError = ScaledError.Of(module.forward(c["input.x"].to(ctx.Device), height, width, mask), c["output.y"]);

        bool ok = launches > 0 && double.IsFinite(outputError) && outputError <= GoldenOutput && double.IsFinite(noGradError) && noGradError <= GoldenOutput
                  && errors.Values.All(e => double.IsFinite(e) && e <= GoldenGradient);
        return (ok, string.Create(CultureInfo.InvariantCulture,
            $"golden {c.Id} [Fast, CUDA kernels, {launches} launches]: output.y {outputError:0.00E+00} (no-grad {noGradError:0.00E+00}, tol {GoldenOutput:0E+00}); worst gradient {worst.Key} {worst.Value:0.00E+00} (tol {GoldenGradient:0E+00}) of {errors.Count}"));
    }

    /// <summary>The attention layer's forward + backward (benchmarks/Shared/AttentionWorkload "pola": dim 64, 2 heads,
    /// batch 1), kernels on and off alternating per size, TF32 off.</summary>
    private static void Time(Context ctx)
    {
        var tokens = ctx.Args.Ints("tokens", ctx.Quick ? "256,1024" : "1024,4096,16384,65536");
        const long dim = 64, heads = 2, batch = 1;
        ctx.SetTf32(false);
        foreach (var n in tokens)
        {
            foreach (var on in new[] { true, false })
            {
                CudaKernels.EnabledOverride = on;
                var report = new Dictionary<string, object?>
                {
                    ["benchmark"] = "attention", ["language"] = "csharp", ["impl"] = on ? "pola-cuda-kernels" : "pola-operators",
                    ["tokens"] = n, ["dim"] = dim, ["heads"] = heads, ["batch"] = batch, ["mode"] = "fwdbwd", ["device"] = ctx.DeviceName,
                    ["dtype"] = "float32", ["tf32"] = "off",
                };
                manual_seed(0);
                try
                {
                    using var workload = new AttentionWorkload("pola", n, dim, heads, batch, "fwdbwd", ctx.Device);
                    long launches = Launched(workload.Step);
                    var result = GpuTiming.Measure(ctx, workload.Step);
                    report["median_ms"] = result.MedianMs;
                    report["min_ms"] = result.MinMs;
                    report["max_ms"] = result.MaxMs;
                    report["iterations"] = result.Iterations;
                    report["warmup_iterations"] = result.WarmupIterations;
                    report["kernel_launches_per_step"] = launches;
                    report["oom"] = false;
                }
                catch (Exception e) when (Isolation.IsOutOfMemory(e))
                {
                    report["oom"] = true;
                    report["error"] = AttentionBenchmark.FirstLine(e.Message);
                }
                report["runtime"] = Program.RuntimeDescription;
                Json.WriteLine(report);
            }
        }
        CudaKernels.EnabledOverride = null;
    }
}
