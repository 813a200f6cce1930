using FluentAssertions;
using PolaFormer.Tests.Infrastructure;
using PolaFormer.Training.Data;
using Xunit;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Training.Data;

public sealed class MixupTests : TorchTest
{
    [Fact]
    public void Label_smoothing_01_gives_the_timm_on_and_off_values_and_rows_sum_to_one()
    {
        using var scope = NewDisposeScope();
        var labels = tensor(new long[] { 3, 0, 9, 3 });
        var y = Mixup.Targets(labels, 10, 0.1, 1.0, CPU);
        y.shape.Should().Equal(4, 10);
        y[0, 3].item<float>().Should().BeApproximately(1 - 0.1f + 0.01f, 1e-7f);
        y[0, 4].item<float>().Should().BeApproximately(0.01f, 1e-7f);
        y.sum(1).allclose(ones(4)).Should().BeTrue();

        var mixed = Mixup.Targets(labels, 10, 0.1, 0.3, CPU); // row 1 mixes label 0 (λ) with label 9 (the reversed batch)
        mixed[1, 0].item<float>().Should().BeApproximately(0.3f * 0.91f + 0.7f * 0.01f, 1e-6f);
        mixed[1, 9].item<float>().Should().BeApproximately(0.3f * 0.01f + 0.7f * 0.91f, 1e-6f);
        mixed.sum(1).allclose(ones(4)).Should().BeTrue();
    }

    [Fact]
    public void Draws_are_deterministic_per_seed_epoch_and_batch_and_follow_the_recipe()
    {
        var mixup = new Mixup(MixupOptions.ImageNet, 1000, seed: 5);
        mixup.Draw(3, 17, 224, 224).Should().Be(mixup.Draw(3, 17, 224, 224));
        new Mixup(MixupOptions.ImageNet, 1000, seed: 5).Draw(3, 17, 224, 224).Should().Be(mixup.Draw(3, 17, 224, 224));
        var draws = Enumerable.Range(0, 2000).Select(b => mixup.Draw(0, b, 224, 224)).ToArray();
        var blends = draws.Where(d => !d.Cutmix).ToArray();
        blends.Select(d => d.Lambda).Distinct().Should().HaveCount(blends.Length, "each batch gets its own λ");
        draws.Count(d => d.Cutmix).Should().BeInRange(900, 1100, "switch probability 0.5");
        blends.Average(d => d.Lambda).Should().BeApproximately(0.5, 0.03, "Beta(0.8, 0.8) has mean ½");
        foreach (var d in draws.Where(d => d.Cutmix))
        {
            d.Top.Should().BeInRange(0, 224);
            d.Bottom.Should().BeInRange(d.Top, 224);
            d.Left.Should().BeInRange(0, 224);
            d.Right.Should().BeInRange(d.Left, 224);
            // The area correction: λ is what remains of the image after pasting the clipped box.
            d.Lambda.Should().Be(1.0 - (double)(d.Bottom - d.Top) * (d.Right - d.Left) / (224.0 * 224.0));
        }
        mixup.Draw(1, 0, 224, 224).Should().NotBe(mixup.Draw(0, 0, 224, 224));
    }

    [Fact]
    public void Cutmix_pastes_the_reversed_batch_in_the_box_and_mixup_blends_it()
    {
        using var scope = NewDisposeScope();
        var images = randn(4, 3, 16, 16, generator: new Generator(3));
        var labels = tensor(new long[] { 0, 1, 2, 3 });
        var original = images.clone();

        var cutmix = new Mixup(MixupOptions.ImageNet with { MixupAlpha = 0 }, 4, seed: 1);
        int b = Enumerable.Range(0, 50).First(i => cutmix.Draw(0, i, 16, 16) is { Lambda: < 1, Bottom: var bottom, Top: var top } && bottom > top);
        var draw = cutmix.Draw(0, b, 16, 16);
        var (mixed, targets) = cutmix.Apply(images, labels, 0, b);
        var expected = images.clone();
        int h = draw.Bottom - draw.Top, w = draw.Right - draw.Left;
        expected.narrow(2, draw.Top, h).narrow(3, draw.Left, w).copy_(images.flip(0).narrow(2, draw.Top, h).narrow(3, draw.Left, w));
        mixed.equal(expected).all().item<bool>().Should().BeTrue();
        targets[0, 0].item<float>().Should().BeApproximately((float)(draw.Lambda * (1 - 0.1 + 0.025) + (1 - draw.Lambda) * 0.025), 1e-6f);
        targets[0, 3].item<float>().Should().BeApproximately((float)(draw.Lambda * 0.025 + (1 - draw.Lambda) * (1 - 0.1 + 0.025)), 1e-6f);

        var blend = new Mixup(MixupOptions.ImageNet with { CutmixAlpha = 0 }, 4, seed: 1);
        double lambda = blend.Draw(0, 0, 16, 16).Lambda;
        var (blended, _) = blend.Apply(images, labels, 0, 0);
        blended.allclose(images * lambda + images.flip(0) * (1 - lambda), rtol: 1e-6, atol: 1e-6).Should().BeTrue();
        images.equal(original).all().item<bool>().Should().BeTrue("the input is not modified");

        var off = new Mixup(MixupOptions.LabelSmoothingOnly, 4);
        var (same, hard) = off.Apply(images, labels, 0, 0);
        same.equal(images).all().item<bool>().Should().BeTrue();
        hard[2, 2].item<float>().Should().BeApproximately(0.925f, 1e-7f);

        FluentActions.Invoking(() => cutmix.Apply(images.narrow(0, 0, 3), labels.narrow(0, 0, 3), 0, 0))
            .Should().Throw<ArgumentException>().WithMessage("*odd batch size 3*");
    }

    [Fact]
    public void Soft_target_cross_entropy_of_one_hot_targets_is_the_usual_cross_entropy()
    {
        using var scope = NewDisposeScope();
        var logits = randn(5, 7, generator: new Generator(4));
        var labels = tensor(new long[] { 0, 6, 3, 3, 1 });
        var oneHot = nn.functional.one_hot(labels, 7).to(ScalarType.Float32);
        SoftTargetCrossEntropy.Compute(logits, oneHot).item<float>()
            .Should().BeApproximately(nn.functional.cross_entropy(logits, labels).item<float>(), 1e-5f);
    }
}
