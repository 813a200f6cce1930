using System.Globalization;
using PolaFormer.Models;
using PolaFormer.Training.Optimization;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PolaFormer.GpuCheck;

/// <summary>
/// One AdamW training step as PolaFormer.Training's Trainer does it: parameter groups with and without weight decay;
/// in bfloat16 the passes run on a bfloat16 copy of the model (<c>model.to(bfloat16)</c>, the polarity core stays
/// float32 inside the library) and AdamW updates float32 master weights (<see cref="LowPrecisionCopy"/>).
/// </summary>
internal sealed class TrainingStep : IDisposable
{
    private readonly Backbone _master;
    private readonly Backbone? _copyModel;
    private readonly LowPrecisionCopy? _copy;
    private readonly AdamW _optimizer;

    public TrainingStep(string name, long numClasses, double? dropPathRate, (long, long)? imageSize, Device device, ScalarType dtype, double lr)
    {
        Dtype = dtype;
        _master = ModelRegistry.Create(name, numClasses: numClasses, dropPathRate: dropPathRate, imageSize: imageSize, device: device);
        if (dtype != ScalarType.Float32)
        {
            _copyModel = ModelRegistry.Create(name, numClasses: numClasses, dropPathRate: dropPathRate, imageSize: imageSize, device: device);
            _copy = new LowPrecisionCopy(_master, _copyModel, dtype);
        }
        var (decay, noDecay) = ParameterGroups.Split(_master);
        _optimizer = optim.AdamW(
            [
                new AdamW.ParamGroup(decay.Select(p => p.Parameter), new AdamW.Options { weight_decay = 0.05 }),
                new AdamW.ParamGroup(noDecay.Select(p => p.Parameter), new AdamW.Options { weight_decay = 0 }),
            ],
            lr: lr, weight_decay: 0.05);
        Compute.train();
    }

    public ScalarType Dtype { get; }
    public Backbone Compute => _copy?.Copy ?? _master;

    /// <summary>One step; returns the loss tensor's value when <paramref name="readLoss"/> (that synchronises).</summary>
    public double Step(Tensor images, Tensor labels, bool readLoss)
    {
        using var scope = NewDisposeScope();
        var logits = Compute.forward(images.to(Dtype)).to(ScalarType.Float32);
        var loss = nn.functional.cross_entropy(logits, labels);
        _optimizer.zero_grad();
        loss.backward();
        _copy?.MoveGradients();
        _optimizer.step();
        _copy?.Refresh();
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
        _optimizer.Dispose();
        _copyModel?.Dispose();
        _master.Dispose();
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
