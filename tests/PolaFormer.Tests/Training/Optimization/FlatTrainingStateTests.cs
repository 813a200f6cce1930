using FluentAssertions;
using PolaFormer.Models;
using PolaFormer.Tests.Infrastructure;
using PolaFormer.Training.Optimization;
using TorchSharp;
using TorchSharp.Modules;
using Xunit;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Training.Optimization;

/// <summary>The flat training state (parameters and gradients in one buffer per group) against the per-tensor
/// TorchSharp code it replaces: same numbers, same checkpoint format.</summary>
/// <remarks>Twin models are built from the same manual_seed, and drop path draws from torch's process-wide
/// generator: a test on another thread drawing in between would make the twins differ, so these run alone.</remarks>
[Collection(PolaFormer.Tests.Training.ProcessWideMeasurements.Name)]
public sealed class FlatTrainingStateTests : TorchTest
{
    private static Backbone Model(long seed)
    {
        manual_seed(seed);
        return ModelRegistry.Create("pola_vit_tiny", numClasses: 3, imageSize: (32, 32));
    }

    private static (FlatParameters Flat, IReadOnlyList<(string Name, Parameter Parameter)> Decay, IReadOnlyList<(string Name, Parameter Parameter)> NoDecay) Flatten(Backbone model)
    {
        var (decay, noDecay) = ParameterGroups.Split(model);
        return (FlatParameters.Create([decay, noDecay]), decay, noDecay);
    }

    /// <summary>A small stack of the layer kinds a backbone has (matrices, vectors, a 4-D convolution weight), so
    /// 120 optimiser steps stay cheap.</summary>
    private static nn.Module<Tensor, Tensor> SmallModel(long seed)
    {
        manual_seed(seed);
        return nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 6 * 6, 33), nn.LayerNorm(33), nn.Linear(33, 7));
    }

    private static (IReadOnlyList<(string, Parameter)> Decay, IReadOnlyList<(string, Parameter)> NoDecay) Split(nn.Module model) =>
        (model.named_parameters().Where(p => p.parameter.dim() > 1).ToList(), model.named_parameters().Where(p => p.parameter.dim() <= 1).ToList());

    private static AdamW TorchSharpAdamW(nn.Module model, double lr) =>
        optim.AdamW(
            [
                new AdamW.ParamGroup(Split(model).Decay.Select(p => p.Item2), new AdamW.Options { weight_decay = 0.05 }),
                new AdamW.ParamGroup(Split(model).NoDecay.Select(p => p.Item2), new AdamW.Options { weight_decay = 0 }),
            ],
            lr: lr, beta1: 0.9, beta2: 0.999, eps: 1e-8);

    private static AdamW TorchSharpAdamW(Backbone model, double lr) =>
        optim.AdamW(
            [
                new AdamW.ParamGroup(ParameterGroups.Split(model).Decay.Select(p => p.Parameter), new AdamW.Options { weight_decay = 0.05 }),
                new AdamW.ParamGroup(ParameterGroups.Split(model).NoDecay.Select(p => p.Parameter), new AdamW.Options { weight_decay = 0 }),
            ],
            lr: lr, beta1: 0.9, beta2: 0.999, eps: 1e-8);

    /// <summary>The same random gradient for parameter <paramref name="name"/> at <paramref name="step"/> in both
    /// models, so only the optimisers differ.</summary>
    private static Tensor Gradient(Parameter p, int step, int index)
    {
        var generator = new Generator((ulong)(1000 * step + index));
        // Gradients of very different sizes per tensor, as in a real model; some steps tiny (Adam's ε matters).
        double scale = Math.Pow(10, (index % 5) - 3) * (step % 7 == 0 ? 1e-6 : 1);
        return randn(p.shape, generator: generator) * scale;
    }

    private static void SetGradients(nn.Module model, int step)
    {
        using var noGrad = no_grad();
        int index = 0;
        foreach (var (_, p) in model.named_parameters())
        {
            using var g = Gradient(p, step, index++);
            if (p.grad is { } existing) existing.copy_(g);
            else p.grad = g.clone();
        }
    }

    private static (double MaxRelative, long Differing, long Total) Compare(nn.Module a, nn.Module b)
    {
        double worst = 0;
        long differing = 0, total = 0;
        var theirs = b.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in a.named_parameters())
        {
            var q = theirs[name];
            var diff = (p - q).abs();
            double scale = Math.Max(q.abs().max().item<float>(), 1e-12);
            worst = Math.Max(worst, diff.max().item<float>() / scale);
            differing += diff.ne(0).sum().item<long>();
            total += p.numel();
        }
        return (worst, differing, total);
    }

    [Fact]
    public void FlatAdamW_takes_the_same_steps_as_TorchSharps_AdamW_for_120_steps()
    {
        using var flatModel = SmallModel(3);
        using var reference = SmallModel(3);
        var (decay, noDecay) = Split(flatModel);
        var flat = FlatParameters.Create([decay, noDecay]);
        using var _flat = flat;
        using var optimizer = new FlatAdamW(flat, [0.05, 0], lr: 1e-3);
        using var torchSharp = TorchSharpAdamW(reference, 1e-3);
        long differing = 0;
        for (int step = 1; step <= 120; step++)
        {
            // A warmup-then-decay learning rate, set through the param groups as the trainer does.
            double lr = 1e-3 * Math.Min(1, step / 10.0) * (1 - step / 200.0);
            foreach (var g in optimizer.Optimizer.ParamGroups) g.LearningRate = lr;
            foreach (var g in torchSharp.ParamGroups) g.LearningRate = lr;
            SetGradients(flatModel, step);
            SetGradients(reference, step);
            optimizer.Step();
            torchSharp.step();
            var (worst, d, total) = Compare(flatModel, reference);
            worst.Should().BeLessThanOrEqualTo(1e-6, $"step {step}");
            differing = d;
            if (step == 120) total.Should().BeGreaterThan(0);
        }
        optimizer.Steps.Should().Be(120);
        // The same operations in the same order on the same values: bit for bit.
        differing.Should().Be(0, "FlatAdamW evaluates TorchSharp's expression in the same order");
        flat.Verify();
    }

    [Fact]
    public void Backward_accumulates_into_the_flat_gradient_views()
    {
        using var flatModel = Model(5);
        using var reference = Model(5);
        var (flat, _, _) = Flatten(flatModel);
        using var _flat = flat;
        var x = randn(2, 3, 32, 32, generator: new Generator(9));
        var labels = tensor(new long[] { 0, 2 });
        for (int round = 0; round < 2; round++)
        {
            flat.ZeroGradients();
            foreach (var p in reference.parameters()) p.grad?.zero_();
            // The same drop-path draws in both models.
            manual_seed(round);
            nn.functional.cross_entropy(flatModel.forward(x), labels).backward();
            manual_seed(round);
            nn.functional.cross_entropy(reference.forward(x), labels).backward();
            flat.Verify();   // still views: autograd added into them rather than replacing them
            var theirs = reference.named_parameters().ToDictionary(p => p.name, p => p.parameter);
            foreach (var (name, p) in flatModel.named_parameters())
                p.grad!.ShouldBeClose(theirs[name].grad!, 0, $"gradient of {name}, round {round}");
        }
        flat.Gradients.abs().sum().item<float>().Should().BeGreaterThan(0);
    }

    [Fact]
    public void A_checkpoint_of_TorchSharps_AdamW_resumes_in_FlatAdamW_and_back()
    {
        using var a = Model(7);
        using var b = Model(7);
        using var adamW = TorchSharpAdamW(a, 1e-3);
        for (int step = 1; step <= 5; step++)
        {
            SetGradients(a, step);
            adamW.step();
        }
        var saved = new MemoryStream();
        using (var writer = new BinaryWriter(saved, System.Text.Encoding.UTF8, leaveOpen: true)) adamW.save_state_dict(writer);

        // b takes a's weights, then a flat optimiser reads the per-tensor optimiser's state.
        using (no_grad())
        {
            var weights = a.state_dict();
            foreach (var (name, t) in b.state_dict()) t.copy_(weights[name]);
        }
        var (flat, _, _) = Flatten(b);
        using var _flat = flat;
        using var flatAdamW = new FlatAdamW(flat, [0.05, 0], lr: 1e-3);
        saved.Position = 0;
        using (var reader = new BinaryReader(saved)) flatAdamW.Optimizer.load_state_dict(reader);
        flatAdamW.Steps.Should().Be(5);
        flatAdamW.ExpAvgSq.abs().sum().item<float>().Should().BeGreaterThan(0, "the moments were loaded into the flat buffers");

        for (int step = 6; step <= 10; step++)
        {
            SetGradients(a, step);
            SetGradients(b, step);
            adamW.step();
            flatAdamW.Step();
        }
        Compare(b, a).Differing.Should().Be(0);

        // And the flat optimiser's checkpoint is TorchSharp's format: a fresh TorchSharp AdamW reads it.
        var again = new MemoryStream();
        using (var writer = new BinaryWriter(again, System.Text.Encoding.UTF8, leaveOpen: true)) flatAdamW.Optimizer.save_state_dict(writer);
        using var c = Model(7);
        using var fresh = TorchSharpAdamW(c, 1e-3);
        again.Position = 0;
        using (var reader = new BinaryReader(again)) fresh.load_state_dict(reader);
        var state = (AdamW.State)fresh.state_dict().State[0];
        state.step.Should().Be(10);
        state.exp_avg.ShouldBeClose(((AdamW.State)adamW.state_dict().State[0]).exp_avg, 0, "first moment after the round trip");
    }

    [Fact]
    public void Clipping_the_flat_gradient_scales_by_max_norm_over_the_global_norm()
    {
        using var flatModel = Model(11);
        using var reference = Model(11);
        var (flat, _, _) = Flatten(flatModel);
        using var _flat = flat;
        foreach (double maxNorm in new[] { 0.5, 1e6 })
        {
            SetGradients(flatModel, 3);
            SetGradients(reference, 3);
            // The global norm in float64, from the per-tensor gradients of the other model.
            double sumOfSquares = reference.parameters().Sum(p => p.grad!.to(ScalarType.Float64).square().sum().item<double>());
            double expectedNorm = Math.Sqrt(sumOfSquares);
            using var norm = flat.ClipGradientNorm(maxNorm);
            norm.item<float>().Should().BeApproximately((float)expectedNorm, (float)(expectedNorm * 1e-6));
            double coefficient = Math.Min(1, maxNorm / (expectedNorm + 1e-6));
            var theirs = reference.named_parameters().ToDictionary(p => p.name, p => p.parameter);
            foreach (var (name, p) in flatModel.named_parameters())
                p.grad!.ShouldBeClose(theirs[name].grad! * coefficient, 1e-5, $"clipped gradient of {name} (max norm {maxNorm})");
            // TorchSharp's clip_grad_norm_ (per-tensor norms) agrees to its own float32 rounding.
            double torchSharpNorm = nn.utils.clip_grad_norm_(reference.parameters(), maxNorm);
            torchSharpNorm.Should().BeApproximately(expectedNorm, expectedNorm * 1e-3);
        }
    }

    [Fact]
    public void Flat_EMA_equals_the_per_tensor_EMA()
    {
        using var source = Model(13);
        var (flat, _, _) = Flatten(source);
        using var _flat = flat;
        using var flatEma = new ModelEma(Model(14), source, decay: 0.9, sourceFlat: flat);
        using var perTensorEma = new ModelEma(Model(14), source, decay: 0.9);
        for (int step = 0; step < 3; step++)
        {
            using (no_grad()) flat.Values.add_(randn(flat.Values.shape, generator: new Generator((ulong)step)));
            flatEma.Update(source);
            perTensorEma.Update(source);
        }
        var theirs = perTensorEma.Model.state_dict();
        foreach (var (name, t) in flatEma.Model.state_dict()) t.ShouldBeClose(theirs[name], 0, $"EMA of {name}");
    }

    [Fact]
    public void Flat_low_precision_copy_moves_gradients_and_refreshes_like_the_per_tensor_one()
    {
        using var master = Model(17);
        using var perTensorMaster = Model(17);
        var (flat, _, _) = Flatten(master);
        using var _flat = flat;
        using var copyModel = Model(18);
        using var perTensorCopyModel = Model(18);
        var flatCopy = new LowPrecisionCopy(flat, master, copyModel, ScalarType.BFloat16);
        var perTensorCopy = new LowPrecisionCopy(perTensorMaster, perTensorCopyModel, ScalarType.BFloat16);
        flatCopy.CopyParameters!.Verify();
        var x = randn(2, 3, 32, 32, generator: new Generator(4)).to(ScalarType.BFloat16);
        var labels = tensor(new long[] { 1, 2 });
        manual_seed(1);
        nn.functional.cross_entropy(flatCopy.Copy.forward(x).to(ScalarType.Float32), labels).backward();
        manual_seed(1);
        nn.functional.cross_entropy(perTensorCopy.Copy.forward(x).to(ScalarType.Float32), labels).backward();
        flatCopy.MoveGradients();
        perTensorCopy.MoveGradients();
        var theirs = perTensorMaster.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in master.named_parameters())
        {
            p.grad!.dtype.Should().Be(ScalarType.Float32);
            p.grad!.ShouldBeClose(theirs[name].grad!, 0, $"master gradient of {name}");
        }
        flatCopy.CopyParameters!.Gradients.to(ScalarType.Float32).abs().sum().item<float>().Should().Be(0, "the copy's gradients are cleared");

        using (no_grad()) flat.Values.add_(0.5);
        using (no_grad()) foreach (var p in perTensorMaster.parameters()) p.add_(0.5);
        flatCopy.Refresh();
        perTensorCopy.Refresh();
        var copies = perTensorCopyModel.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in copyModel.named_parameters())
        {
            p.dtype.Should().Be(ScalarType.BFloat16);
            p.ShouldBeClose(copies[name], 0, $"refreshed copy of {name}");
        }
    }

    [Fact]
    public void Loss_scaler_on_the_flat_gradient_skips_non_finite_steps()
    {
        using var model = Model(19);
        var (flat, _, _) = Flatten(model);
        using var _flat = flat;
        var scaler = new DynamicLossScaler(initialScale: 8, growthInterval: 2);
        using (no_grad()) flat.Gradients.fill_(8);
        scaler.Unscale(flat).Should().BeTrue();
        flat.Gradients.eq(1).all().item<bool>().Should().BeTrue("the gradients were divided by the scale");
        using (no_grad()) flat.Gradients[5] = float.NaN;
        scaler.Unscale(flat).Should().BeFalse();
        scaler.Scale.Should().Be(4);
        flat.Gradients.abs().sum().item<float>().Should().Be(0, "a skipped step's gradients are cleared");
    }

    [Fact]
    public void Verify_names_a_parameter_whose_gradient_was_set_to_none_and_layouts_must_match()
    {
        using var model = Model(23);
        var (flat, decay, _) = Flatten(model);
        using var _flat = flat;
        flat.Verify();
        decay[0].Parameter.grad = null;
        FluentActions.Invoking(flat.Verify).Should().Throw<InvalidOperationException>()
            .WithMessage($"*gradient of '{decay[0].Name}' is none*ZeroGradients*");

        using var other = ModelRegistry.Create("pola_vit_tiny", numClasses: 5, imageSize: (32, 32));
        FluentActions.Invoking(() => FlatParameters.Mirror(flat, other, withGradients: false)).Should().Throw<ArgumentException>()
            .WithMessage("*head.weight*(5, *expected (3, *");
    }

    [Fact]
    public void Mixed_dtypes_and_repeated_parameters_are_refused_by_name()
    {
        var a = new Parameter(ones(3));
        var b = new Parameter(ones(3, dtype: ScalarType.Float64));
        FluentActions.Invoking(() => FlatParameters.Create([[("a", a), ("b", b)]])).Should().Throw<ArgumentException>().WithMessage("*'b'*Float64*");
        FluentActions.Invoking(() => FlatParameters.Create([[("a", a)], [("again", a)]])).Should().Throw<ArgumentException>().WithMessage("*'again' appears twice*");
        FluentActions.Invoking(() => FlatParameters.Create([[]])).Should().Throw<ArgumentException>().WithMessage("*no parameters*");
    }

    [Fact]
    public void Every_parameter_starts_on_an_aligned_offset_and_padding_stays_zero_under_updates()
    {
        using var model = Model(29);
        var (flat, _, _) = Flatten(model);
        using var _flat = flat;
        using var optimizer = new FlatAdamW(flat, [0.05, 0], lr: 1e-2);
        flat.Entries.Should().OnlyContain(e => e.Offset % FlatParameters.AlignmentElements == 0);
        var used = zeros(flat.Values.shape, dtype: ScalarType.Bool);
        foreach (var e in flat.Entries) used.narrow(0, e.Offset, e.Count).fill_(true);
        for (int step = 1; step <= 3; step++)
        {
            SetGradients(model, step);
            flat.ClipGradientNorm(1.0);
            optimizer.Step();
        }
        flat.Values.masked_select(used.logical_not()).abs().sum().item<float>().Should().Be(0);
    }
}
