using System.Diagnostics;
using System.Reflection;
using PolaFormer.Attention;
using PolaFormer.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace PolaFormer.GpuCheck;

/// <summary>Runs each benchmark configuration in a fresh process of this program (the memory figures need it; see
/// <see cref="DeviceMemory"/>), forwarding its output.</summary>
internal static class Isolation
{
    public static bool Wanted(Context ctx) => !ctx.Args.Flag("single") && (ctx.IsCuda ? !ctx.Args.Flag("no-isolate") : ctx.Args.Flag("isolate"));

    /// <summary>Runs one configuration in a child process; false (after printing a JSON error line) when it failed.
    /// Out of memory is not a failure: the child reports it and exits 0.</summary>
    public static bool RunChild(Context ctx, IEnumerable<string> options, Dictionary<string, object?> describe)
    {
        var path = Environment.ProcessPath ?? throw new InvalidOperationException("no process path");
        var psi = new ProcessStartInfo(path) { UseShellExecute = false };
        if (Path.GetFileNameWithoutExtension(path) == "dotnet") psi.ArgumentList.Add(Assembly.GetEntryAssembly()!.Location);
        foreach (var arg in new[] { ctx.Args.Mode, "--single", "--device", ctx.DeviceName, "--threads", ctx.Threads.ToString(System.Globalization.CultureInfo.InvariantCulture) })
            psi.ArgumentList.Add(arg);
        if (ctx.Quick) psi.ArgumentList.Add("--quick");
        foreach (var arg in options) psi.ArgumentList.Add(arg);
        Console.Out.Flush();
        using var child = Process.Start(psi) ?? throw new InvalidOperationException("could not start " + path);
        child.WaitForExit();
        if (child.ExitCode == 0) return true;
        describe["error"] = $"the child process exited with code {child.ExitCode}";
        Json.WriteLine(describe);
        return false;
    }

    public static bool IsOutOfMemory(Exception e) =>
        e.Message.Contains("out of memory", StringComparison.OrdinalIgnoreCase) || e is OutOfMemoryException;
}

/// <summary>
/// <c>bench-attention</c>: one attention layer (PVT style, no spatial reduction: polarity with its projections and
/// depthwise convolution, or softmax), forward+backward on a square token grid, as the CPU benchmark's
/// <c>attention</c> command does; JSON lines with median_ms and memory.
/// </summary>
internal static class AttentionBenchmark
{
    public static int Run(Context ctx)
    {
        var a = ctx.Args;
        var impls = a.List("impls", "pola,pola-reference,softmax");
        var tokens = a.Ints("tokens", ctx.Quick ? "256,1024" : "1024,4096,16384,65536");
        long dim = a.Int("dim", 64), heads = a.Int("heads", 2), batch = a.Int("batch", 1);
        string mode = a.Text("mode", "fwdbwd"), tf32 = a.Text("tf32", "off");
        if (mode is not ("fwd" or "fwdbwd")) throw new ArgumentException($"--mode is '{mode}'; expected fwd or fwdbwd.");
        int failed = 0;
        foreach (var n in tokens)
            foreach (var impl in impls)
            {
                var describe = Describe(ctx, impl, n, dim, heads, batch, mode, tf32);
                if (Isolation.Wanted(ctx))
                    failed += Isolation.RunChild(ctx, ["--impls", impl, "--tokens", n.ToString(), "--dim", dim.ToString(), "--heads", heads.ToString(),
                        "--batch", batch.ToString(), "--mode", mode, "--tf32", tf32], describe) ? 0 : 1;
                else
                    One(ctx, describe, impl, n, dim, heads, batch, mode, tf32 == "on");
            }
        return failed == 0 ? 0 : 1;
    }

    private static Dictionary<string, object?> Describe(Context ctx, string impl, long tokens, long dim, long heads, long batch, string mode, string tf32) => new()
    {
        ["benchmark"] = "attention", ["language"] = "csharp", ["impl"] = impl, ["tokens"] = tokens, ["dim"] = dim, ["heads"] = heads,
        ["batch"] = batch, ["mode"] = mode, ["device"] = ctx.DeviceName, ["dtype"] = "float32", ["tf32"] = tf32,
    };

    private static void One(Context ctx, Dictionary<string, object?> report, string impl, long tokens, long dim, long heads, long batch, string mode, bool tf32)
    {
        ctx.SetTf32(tf32);
        manual_seed(0);
        var probe = GpuTiming.Probe(ctx);
        try
        {
            using var workload = new AttentionWorkload(impl, tokens, dim, heads, batch, mode, ctx.Device);
            var result = GpuTiming.Measure(ctx, workload.Step);
            report["median_ms"] = result.MedianMs;
            report["min_ms"] = result.MinMs;
            report["max_ms"] = result.MaxMs;
            report["iterations"] = result.Iterations;
            report["warmup_iterations"] = result.WarmupIterations;
            report["oom"] = false;
        }
        catch (Exception e) when (Isolation.IsOutOfMemory(e))
        {
            report["oom"] = true;
            report["error"] = FirstLine(e.Message);
        }
        foreach (var (k, v) in probe.Report()) report[k] = v;
        report["runtime"] = Program.RuntimeDescription;
        Json.WriteLine(report);
    }

    internal static string FirstLine(string text) => text.Split('\n', 2)[0].Trim();
}

/// <summary>
/// <c>bench-models</c>: inference images/s (batch 64) and training images/s (batch 32, AdamW steps as the Trainer
/// does them, with the flat training state unless <c>--states per-tensor,flat</c> asks for both) at 224 × 224, in float32 with TF32 off ("fp32"), float32 with TF32 on ("tf32") and bfloat16 models
/// ("bf16": <c>model.to(bfloat16)</c>; float32 master weights for training).
/// </summary>
internal static class ModelBenchmark
{
    public static int Run(Context ctx)
    {
        var a = ctx.Args;
        var models = a.List("models", "pola_pvt_tiny,pola_swin_tiny");
        var precisions = a.List("precisions", "fp32,tf32,bf16");
        var phases = a.List("phases", "inference,training");
        var states = a.List("states", "flat");
        long size = a.Int("size", ctx.Quick ? 64 : 224);
        long inferBatch = a.Int("infer-batch", ctx.Quick ? 2 : 64), trainBatch = a.Int("train-batch", ctx.Quick ? 2 : 32);
        int failed = 0;
        foreach (var model in models)
            foreach (var precision in precisions)
                foreach (var phase in phases)
                foreach (var stateName in phase == "training" ? states : ["-"])
                {
                    long batch = phase == "training" ? trainBatch : inferBatch;
                    var describe = new Dictionary<string, object?>
                    {
                        ["benchmark"] = "model", ["language"] = "csharp", ["model"] = model, ["phase"] = phase, ["precision"] = precision,
                        ["batch"] = batch, ["image_size"] = size, ["device"] = ctx.DeviceName,
                    };
                    if (phase == "training") describe["state"] = stateName;
                    if (Isolation.Wanted(ctx))
                        failed += Isolation.RunChild(ctx, ["--models", model, "--precisions", precision, "--phases", phase, "--size", size.ToString(),
                            "--infer-batch", inferBatch.ToString(), "--train-batch", trainBatch.ToString(), "--states", stateName], describe) ? 0 : 1;
                    else
                        One(ctx, describe, model, precision, phase, batch, size, stateName);
                }
        return failed == 0 ? 0 : 1;
    }

    private static void One(Context ctx, Dictionary<string, object?> report, string name, string precision, string phase, long batch, long size, string stateName)
    {
        var dtype = precision switch
        {
            "fp32" or "tf32" => ScalarType.Float32,
            "bf16" => ScalarType.BFloat16,
            _ => throw new ArgumentException($"--precisions has '{precision}'; expected fp32, tf32 or bf16."),
        };
        ctx.SetTf32(precision == "tf32");
        report["dtype"] = dtype == ScalarType.Float32 ? "float32" : "bfloat16";
        report["tf32"] = ctx.Tf32State();
        manual_seed(0);
        var probe = GpuTiming.Probe(ctx);
        (long, long)? buildSize = size == 224 ? null : (size, size);
        try
        {
            Timing.Result result;
            if (phase == "inference")
            {
                using var model = ModelRegistry.Create(name, imageSize: buildSize, device: ctx.Device);
                if (dtype != ScalarType.Float32) model.to(dtype);
                model.eval();
                using var x = randn(batch, 3, size, size, device: ctx.Device).to(dtype);
                result = GpuTiming.Measure(ctx, () =>
                {
                    using var scope = NewDisposeScope();
                    using var noGrad = no_grad();
                    model.forward(x);
                }, warmup: 3, minIterations: 10, minSeconds: 1, maxSeconds: 30);
            }
            else if (phase == "training")
            {
                var state = stateName == "per-tensor" ? StateKind.PerTensor : StateKind.Flat;
                using var step = new TrainingStep(name, 1000, dropPathRate: null, buildSize, ctx.Device, dtype, lr: 1e-4, state);
                using var x = randn(batch, 3, size, size, device: ctx.Device);
                using var labels = randint(0, 1000, batch, device: ctx.Device);
                result = GpuTiming.Measure(ctx, () => step.Step(x, labels, readLoss: false), warmup: 3, minIterations: 10, minSeconds: 1, maxSeconds: 30);
            }
            else throw new ArgumentException($"--phases has '{phase}'; expected inference or training.");
            report["median_ms"] = result.MedianMs;
            report["min_ms"] = result.MinMs;
            report["max_ms"] = result.MaxMs;
            report["iterations"] = result.Iterations;
            report["warmup_iterations"] = result.WarmupIterations;
            report["images_per_s"] = batch * 1000.0 / result.MedianMs;
            report["oom"] = false;
        }
        catch (Exception e) when (Isolation.IsOutOfMemory(e))
        {
            report["oom"] = true;
            report["error"] = AttentionBenchmark.FirstLine(e.Message);
        }
        foreach (var (k, v) in probe.Report()) report[k] = v;
        report["runtime"] = Program.RuntimeDescription;
        Json.WriteLine(report);
    }
}
