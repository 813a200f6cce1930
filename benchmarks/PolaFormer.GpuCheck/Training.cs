using System.Diagnostics;
using System.Globalization;
using PolaFormer.Models;
using PolaFormer.Training.Optimization;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PolaFormer.GpuCheck;

/// <summary>How the training state is kept: per-tensor (TorchSharp's AdamW, a loop per parameter tensor, the code
/// before the flat state) or flat (<see cref="FlatParameters"/> + <see cref="FlatAdamW"/>, what the Trainer uses).</summary>
internal enum StateKind
{
    PerTensor,
    Flat,
}

/// <summary>
/// One AdamW training step as PolaFormer.Training's Trainer does it: parameter groups with and without weight decay;
/// in bfloat16 the passes run on a bfloat16 copy of the model (<c>model.to(bfloat16)</c>, the polarity core stays
/// float32 inside the library) and AdamW updates float32 master weights (<see cref="LowPrecisionCopy"/>); optional
/// gradient clipping and EMA. Either with the flat training state (the Trainer's) or per tensor (the old loop), so
/// one run measures both.
/// </summary>
internal sealed class TrainingStep : IDisposable
{
    private readonly Backbone _master;
    private readonly Backbone? _copyModel;
    private readonly LowPrecisionCopy? _copy;
    private readonly AdamW? _perTensor;
    private readonly FlatParameters? _flat;
    private readonly FlatAdamW? _flatAdamW;
    private readonly ModelEma? _ema;
    private readonly double _clip;

    public TrainingStep(string name, long numClasses, double? dropPathRate, (long, long)? imageSize, Device device, ScalarType dtype, double lr,
        StateKind state = StateKind.Flat, double clip = 0, bool ema = false)
    {
        Dtype = dtype;
        State = state;
        _clip = clip;
        _master = ModelRegistry.Create(name, numClasses: numClasses, dropPathRate: dropPathRate, imageSize: imageSize, device: device);
        var (decay, noDecay) = ParameterGroups.Split(_master);
        if (state == StateKind.Flat)
        {
            _flat = FlatParameters.Create([decay, noDecay]);
            _flatAdamW = new FlatAdamW(_flat, [0.05, 0], lr: lr);
        }
        else
        {
            _perTensor = optim.AdamW(
                [
                    new AdamW.ParamGroup(decay.Select(p => p.Parameter), new AdamW.Options { weight_decay = 0.05 }),
                    new AdamW.ParamGroup(noDecay.Select(p => p.Parameter), new AdamW.Options { weight_decay = 0 }),
                ],
                lr: lr, weight_decay: 0.05);
        }
        if (dtype != ScalarType.Float32)
        {
            _copyModel = ModelRegistry.Create(name, numClasses: numClasses, dropPathRate: dropPathRate, imageSize: imageSize, device: device);
            _copy = _flat is null ? new LowPrecisionCopy(_master, _copyModel, dtype) : new LowPrecisionCopy(_flat, _master, _copyModel, dtype);
        }
        if (ema)
            _ema = new ModelEma(ModelRegistry.Create(name, numClasses: numClasses, dropPathRate: dropPathRate, imageSize: imageSize, device: device),
                _master, 0.9998, _flat);
        Compute.train();
    }

    public ScalarType Dtype { get; }
    public StateKind State { get; }
    public Backbone Compute => _copy?.Copy ?? _master;

    /// <summary>The phases of one step, in order; <see cref="Step"/> runs them all, the breakdown times each.</summary>
    public IReadOnlyList<(string Name, Action<Tensor, Tensor> Run)> Phases()
    {
        Tensor? loss = null;
        var phases = new List<(string, Action<Tensor, Tensor>)>
        {
            ("zero_grad", (_, _) => ZeroGradients()),
            ("forward", (x, y) => loss = nn.functional.cross_entropy(Compute.forward(x.to(Dtype)).to(ScalarType.Float32), y)),
            ("backward", (_, _) => loss!.backward()),
        };
        if (_copy is not null) phases.Add(("move_gradients", (_, _) => _copy.MoveGradients()));
        if (_clip > 0) phases.Add(("clip", (_, _) => Clip()));
        phases.Add(("optimizer", (_, _) => OptimizerStep()));
        if (_copy is not null) phases.Add(("refresh_copy", (_, _) => _copy.Refresh()));
        if (_ema is not null) phases.Add(("ema", (_, _) => _ema.Update(_master)));
        return phases;
    }

    private void ZeroGradients()
    {
        if (_flatAdamW is not null) _flatAdamW.ZeroGradients();
        else _perTensor!.zero_grad();
    }

    private void Clip()
    {
        if (_flat is not null) _flat.ClipGradientNorm(_clip);
        else nn.utils.clip_grad_norm_(_master.parameters(), _clip);
    }

    private void OptimizerStep()
    {
        if (_flatAdamW is not null) _flatAdamW.Step();
        else _perTensor!.step();
    }

    /// <summary>One step; returns the loss tensor's value when <paramref name="readLoss"/> (that synchronises).</summary>
    public double Step(Tensor images, Tensor labels, bool readLoss)
    {
        using var scope = NewDisposeScope();
        ZeroGradients();
        var logits = Compute.forward(images.to(Dtype)).to(ScalarType.Float32);
        var loss = nn.functional.cross_entropy(logits, labels);
        loss.backward();
        _copy?.MoveGradients();
        if (_clip > 0) Clip();
        OptimizerStep();
        _copy?.Refresh();
        _ema?.Update(_master);
        return readLoss ? loss.item<float>() : double.NaN;
    }

    /// <summary>The loss without updating (no gradients).</summary>
    public double Loss(Tensor images, Tensor labels)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        return nn.functional.cross_entropy(Compute.forward(images.to(Dtype)).to(ScalarType.Float32), labels).item<float>();
    }

    public void Dispose()
    {
        _perTensor?.Dispose();
        _flatAdamW?.Dispose();
        _ema?.Dispose();
        _copyModel?.Dispose();
        _flat?.Dispose();
        _master.Dispose();
    }
}

/// <summary>
/// <c>bench-steps</c>: where a training step's time goes. For each model, precision (fp32, tf32, bf16) and state
/// (per-tensor, flat): the median device time of every phase alone (zero-grad, forward, backward, gradient move,
/// clipping at 5, AdamW, copy refresh, EMA — each bracketed by synchronisations), the median synchronised step, and
/// the median host time of a step without synchronisation (how long the CPU takes to issue the step's work). JSON
/// lines with benchmark="step".
/// </summary>
internal static class StepBreakdown
{
    public static int Run(Context ctx)
    {
        var a = ctx.Args;
        var models = a.List("models", "pola_pvt_tiny,pola_swin_tiny");
        var precisions = a.List("precisions", "fp32,tf32,bf16");
        var states = a.List("states", "per-tensor,flat");
        long size = a.Int("size", ctx.Quick ? 64 : 224), batch = a.Int("train-batch", ctx.Quick ? 2 : 32);
        int iterations = (int)a.Int("iterations", ctx.Quick ? 3 : 20);
        double clip = a.Real("clip", 5.0);
        bool ema = a.Text("ema", "on") == "on";
        foreach (var model in models)
            foreach (var precision in precisions)
                foreach (var stateName in states)
                {
                    var state = stateName switch
                    {
                        "per-tensor" => StateKind.PerTensor,
                        "flat" => StateKind.Flat,
                        _ => throw new ArgumentException($"--states has '{stateName}'; expected per-tensor or flat."),
                    };
                    var dtype = precision == "bf16" ? ScalarType.BFloat16 : ScalarType.Float32;
                    ctx.SetTf32(precision == "tf32");
                    manual_seed(0);
                    var report = new Dictionary<string, object?>
                    {
                        ["benchmark"] = "step", ["language"] = "csharp", ["model"] = model, ["precision"] = precision, ["state"] = stateName,
                        ["batch"] = batch, ["image_size"] = size, ["device"] = ctx.DeviceName, ["clip"] = clip, ["ema"] = ema, ["tf32"] = ctx.Tf32State(),
                    };
                    try
                    {
                        (long, long)? buildSize = size == 224 ? null : (size, size);
                        using var step = new TrainingStep(model, 1000, dropPathRate: null, buildSize, ctx.Device, dtype, lr: 1e-4, state, clip, ema);
                        using var x = randn(batch, 3, size, size, device: ctx.Device);
                        using var labels = randint(0, 1000, batch, device: ctx.Device);
                        for (int i = 0; i < 3; i++) step.Step(x, labels, readLoss: false);
                        ctx.Synchronize();

                        var phases = step.Phases();
                        var phaseTimes = phases.ToDictionary(p => p.Name, _ => new List<double>());
                        var host = new List<double>();
                        var whole = new List<double>();
                        for (int i = 0; i < iterations; i++)
                        {
                            using (var scope = NewDisposeScope())
                            {
                                foreach (var (name, run) in phases)
                                {
                                    var sw = Stopwatch.StartNew();
                                    run(x, labels);
                                    ctx.Synchronize();
                                    phaseTimes[name].Add(sw.Elapsed.TotalMilliseconds);
                                }
                            }
                            // The whole step without synchronising inside it: the host time is what the CPU spends
                            // issuing the work; the synchronised time is the step as training sees it.
                            ctx.Synchronize();
                            var clock = Stopwatch.StartNew();
                            step.Step(x, labels, readLoss: false);
                            host.Add(clock.Elapsed.TotalMilliseconds);
                            ctx.Synchronize();
                            whole.Add(clock.Elapsed.TotalMilliseconds);
                        }
                        foreach (var (name, times) in phaseTimes) report[name + "_ms"] = Timing.Median(times);
                        report["host_ms"] = Timing.Median(host);
                        report["step_ms"] = Timing.Median(whole);
                        report["images_per_s"] = batch * 1000.0 / Timing.Median(whole);
                        report["iterations"] = iterations;
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
        return 0;
    }
}

/// <summary><c>train</c>: a few AdamW steps of a model on one fixed random batch; the loss must go down.</summary>
internal static class TrainCheck
{
    public static int Run(Context ctx)
    {
        var a = ctx.Args;
        string name = a.Text("model", "pola_pvt_tiny");
        long size = a.Int("size", ctx.Quick ? 64 : 224);
        long batch = a.Int("batch", ctx.Quick ? 4 : 32);
        int steps = (int)a.Int("steps", ctx.Quick ? 3 : 5);
        double lr = a.Real("lr", 5e-4);
        const long classes = 100;
        ctx.SetTf32(a.Text("tf32", "off") == "on");
        int failures = 0;
        foreach (var dtypeName in a.List("dtypes", "float32,bfloat16"))
        {
            var dtype = dtypeName switch
            {
                "float32" => ScalarType.Float32,
                "bfloat16" => ScalarType.BFloat16,
                _ => throw new ArgumentException($"--dtypes has '{dtypeName}'; expected float32 or bfloat16."),
            };
            manual_seed(7);
            using var step = new TrainingStep(name, classes, dropPathRate: 0, imageSize: (size, size), ctx.Device, dtype, lr);
            using var images = randn(batch, 3, size, size, device: ctx.Device);
            using var labels = randint(0, classes, batch, device: ctx.Device);
            double before = step.Loss(images, labels);
            var losses = new List<double>();
            var clock = System.Diagnostics.Stopwatch.StartNew();
            for (int i = 0; i < steps; i++) losses.Add(step.Step(images, labels, readLoss: true));
            ctx.Synchronize();
            double msPerStep = clock.Elapsed.TotalMilliseconds / steps;
            double after = step.Loss(images, labels);
            bool ok = double.IsFinite(after) && after < before && losses.All(double.IsFinite);
            if (!ok) failures++;
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{(ok ? "PASS" : "FAIL")} train {name} {dtypeName} {ctx.DeviceName} {size}px batch {batch}, AdamW lr {lr}: loss {before:0.0000} -> {after:0.0000} after {steps} steps " +
                $"(per step: {string.Join(" ", losses.Select(l => l.ToString("0.0000", CultureInfo.InvariantCulture)))}); {msPerStep:0.0} ms/step including the first"));
        }
        return failures == 0 ? 0 : 1;
    }
}
