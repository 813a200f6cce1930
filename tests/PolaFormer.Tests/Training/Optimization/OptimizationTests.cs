using FluentAssertions;
using PolaFormer.Models;
using PolaFormer.Tests.Infrastructure;
using PolaFormer.Training.Optimization;
using TorchSharp.Modules;
using Xunit;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Training.Optimization;

public sealed class OptimizationTests : TorchTest
{
    [Fact]
    public void Schedule_warms_up_linearly_then_follows_the_cosine_of_timm()
    {
        var s = new WarmupCosineSchedule(BaseLr: 1e-3, WarmupLr: 1e-6, MinLr: 1e-5, WarmupSteps: 10, TotalSteps: 100);
        s.At(0).Should().Be(1e-6);
        s.At(5).Should().BeApproximately(1e-6 + 5 * (1e-3 - 1e-6) / 10, 1e-15);
        // timm's CosineLRScheduler without warmup_prefix: the cosine runs over all steps, counted from 0.
        s.At(10).Should().BeApproximately(1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + Math.Cos(Math.PI * 10 / 100)), 1e-15);
        s.At(50).Should().BeApproximately(1e-5 + 0.5 * (1e-3 - 1e-5), 1e-15);
        s.At(100).Should().Be(1e-5);
        s.At(99).Should().BeGreaterThan(1e-5);
    }

    [Fact]
    public void No_weight_decay_for_one_dimensional_parameters_biases_and_the_models_names()
    {
        using var model = ModelRegistry.Create("pola_swin_tiny", device: META);
        var (decay, noDecay) = ParameterGroups.Split(model);
        var exempt = noDecay.Select(p => p.Name).ToHashSet();
        exempt.Should().Contain("layers.0.blocks.0.norm1.weight").And.Contain("head.bias")
            .And.Contain("layers.2.blocks.0.attn.relative_position_bias_table");
        decay.Select(p => p.Name).Should().Contain("layers.0.blocks.0.attn.qkvg.weight").And.Contain("layers.0.blocks.0.attn.power")
            .And.Contain("layers.0.blocks.0.attn.positional_encoding");
        (decay.Count + noDecay.Count).Should().Be(model.parameters().Count());
    }

    [Fact]
    public void Ema_moves_towards_the_model_by_one_minus_decay()
    {
        using var source = ModelRegistry.Create("pola_vit_tiny", numClasses: 2, imageSize: (32, 32));
        using var shadow = ModelRegistry.Create("pola_vit_tiny", numClasses: 2, imageSize: (32, 32));
        using var ema = new ModelEma(shadow, source, decay: 0.75);
        var before = ema.Model.state_dict()["head.weight"].clone();
        using (no_grad()) source.state_dict()["head.weight"].add_(1.0);
        ema.Update(source);
        var after = ema.Model.state_dict()["head.weight"];
        (after - before).ShouldBeClose(full_like(before, 0.25), 1e-6, "ema step");
    }

    [Fact]
    public void Loss_scaler_skips_non_finite_steps_backs_off_and_grows_after_good_ones()
    {
        var p = new Parameter(ones(3));
        var scaler = new DynamicLossScaler(initialScale: 8, growthInterval: 2);
        scaler.ScaleLoss(p.sum()).backward();
        scaler.Unscale([p]).Should().BeTrue();
        p.grad!.ShouldBeClose(ones(3), 0, "unscaled gradient");
        p.grad!.zero_();

        scaler.ScaleLoss((p * float.PositiveInfinity).sum()).backward();
        scaler.Unscale([p]).Should().BeFalse();
        scaler.Scale.Should().Be(4);
        scaler.SkippedSteps.Should().Be(1);
        p.grad!.abs().sum().item<float>().Should().Be(0);

        for (int i = 0; i < 2; i++)
        {
            p.grad!.zero_();
            scaler.ScaleLoss(p.sum()).backward();
            scaler.Unscale([p]).Should().BeTrue();
        }
        scaler.Scale.Should().Be(8);
    }
}
