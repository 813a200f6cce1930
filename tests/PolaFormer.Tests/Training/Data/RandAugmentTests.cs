using FluentAssertions;
using PolaFormer.Training.Data;
using Xunit;

namespace PolaFormer.Tests.Training.Data;

public sealed class RandAugmentTests
{
    private static readonly (byte, byte, byte) Fill = (124, 116, 104);
    private static readonly RandAugment Official = RandAugment.Parse("rand-m9-mstd0.5-inc1", Fill, Interpolation.Bicubic);

    [Fact]
    public void The_official_string_parses_to_two_increasing_ops_at_magnitude_9_with_noise_05()
    {
        Official.NumOps.Should().Be(2);
        Official.Magnitude.Should().Be(9);
        Official.MagnitudeStd.Should().Be(0.5);
        Official.Ops.Should().Equal(
            AugmentOp.AutoContrast, AugmentOp.Equalize, AugmentOp.Invert, AugmentOp.Rotate, AugmentOp.PosterizeIncreasing,
            AugmentOp.SolarizeIncreasing, AugmentOp.SolarizeAdd, AugmentOp.ColorIncreasing, AugmentOp.ContrastIncreasing,
            AugmentOp.BrightnessIncreasing, AugmentOp.SharpnessIncreasing, AugmentOp.ShearX, AugmentOp.ShearY,
            AugmentOp.TranslateXRel, AugmentOp.TranslateYRel);

        var other = RandAugment.Parse("rand-m7-n3", Fill, Interpolation.Bicubic);
        (other.NumOps, other.Magnitude, other.MagnitudeStd).Should().Be((3, 7.0, 0.0));
        other.Ops.Should().Equal(RandAugment.StandardOps);
        RandAugment.Parse("rand-mstdinf", Fill, Interpolation.Bicubic).MagnitudeStd.Should().Be(double.PositiveInfinity);
        FluentActions.Invoking(() => RandAugment.Parse("rand-q5", Fill, Interpolation.Bicubic)).Should().Throw<FormatException>().WithMessage("*q5*");
    }

    [Fact]
    public void Magnitude_9_maps_to_timms_parameters()
    {
        RandAugment.Argument(AugmentOp.Rotate, 9).Should().BeApproximately(27.0, 1e-12); // 30·9/10
        RandAugment.Argument(AugmentOp.ShearX, 9).Should().BeApproximately(0.27, 1e-12);
        RandAugment.Argument(AugmentOp.TranslateYRel, 9).Should().BeApproximately(0.45 * 9 / 10, 1e-12);
        RandAugment.Argument(AugmentOp.PosterizeIncreasing, 9).Should().Be(1); // 4 − int(3.6)
        RandAugment.Argument(AugmentOp.Posterize, 9).Should().Be(3);
        RandAugment.Argument(AugmentOp.SolarizeIncreasing, 9).Should().Be(26); // 256 − int(230.4)
        RandAugment.Argument(AugmentOp.Solarize, 9).Should().Be(230);
        RandAugment.Argument(AugmentOp.SolarizeAdd, 9).Should().Be(99);
        RandAugment.Argument(AugmentOp.ColorIncreasing, 9).Should().BeApproximately(0.81, 1e-12); // factor 1 ± 0.81
        RandAugment.Argument(AugmentOp.Contrast, 9).Should().BeApproximately(1.72, 1e-12); // 9/10·1.8 + 0.1

        // Increasing variants get more severe with the magnitude; their 0 is (nearly) the identity.
        RandAugment.Argument(AugmentOp.PosterizeIncreasing, 0).Should().Be(4);
        RandAugment.Argument(AugmentOp.PosterizeIncreasing, 10).Should().Be(0);
        RandAugment.Argument(AugmentOp.SolarizeIncreasing, 0).Should().Be(256);
        RandAugment.Argument(AugmentOp.SolarizeIncreasing, 10).Should().Be(0);
        RandAugment.Argument(AugmentOp.BrightnessIncreasing, 0).Should().Be(0);
        RandAugment.Argument(AugmentOp.SharpnessIncreasing, 5).Should().BeLessThan(RandAugment.Argument(AugmentOp.SharpnessIncreasing, 9));
        RandAugment.IsSigned(AugmentOp.Rotate).Should().BeTrue();
        RandAugment.IsSigned(AugmentOp.PosterizeIncreasing).Should().BeFalse();
    }

    [Fact]
    public void Lut_ops_follow_pil_semantics()
    {
        var image = TestImages.Noise(23, 17, 5);
        PixelOps.Invert(PixelOps.Invert(image)).Pixels.Should().Equal(image.Pixels);
        PixelOps.Invert(image).Pixels.Zip(image.Pixels).Should().OnlyContain(p => p.First + p.Second == 255);

        var solarized = PixelOps.Solarize(image, 128);
        for (int i = 0; i < image.Pixels.Length; i++)
            solarized.Pixels[i].Should().Be(image.Pixels[i] < 128 ? image.Pixels[i] : (byte)(255 - image.Pixels[i]));
        PixelOps.Solarize(image, 256).Pixels.Should().Equal(image.Pixels, "a threshold of 256 inverts nothing");
        PixelOps.Solarize(image, 0).Pixels.Should().Equal(PixelOps.Invert(image).Pixels);

        var added = PixelOps.SolarizeAdd(image, 99);
        for (int i = 0; i < image.Pixels.Length; i++)
            added.Pixels[i].Should().Be(image.Pixels[i] < 128 ? (byte)Math.Min(255, image.Pixels[i] + 99) : image.Pixels[i]);

        PixelOps.Posterize(image, 1).Pixels.Should().OnlyContain(v => v == 0 || v == 128);
        PixelOps.Posterize(image, 4).Pixels.Should().OnlyContain(v => (v & 15) == 0);
        PixelOps.Posterize(image, 0).Pixels.Should().OnlyContain(v => v == 0);
        PixelOps.Posterize(image, 8).Pixels.Should().Equal(image.Pixels);
    }

    [Fact]
    public void AutoContrast_stretches_each_channel_to_the_full_range_and_equalize_flattens_the_histogram()
    {
        var dull = new RgbImage(16, 16, Enumerable.Range(0, 16 * 16 * 3).Select(i => (byte)(50 + (i * 7) % 151)).ToArray());
        var stretched = PixelOps.AutoContrast(dull);
        for (int c = 0; c < 3; c++)
        {
            var channel = stretched.Pixels.Where((_, i) => i % 3 == c).ToArray();
            channel.Min().Should().Be(0);
            channel.Max().Should().Be(255);
        }
        var full = new RgbImage(16, 16, Enumerable.Range(0, 16 * 16 * 3).Select(i => (byte)(i % 256)).ToArray());
        PixelOps.AutoContrast(full).Pixels.Should().Equal(full.Pixels, "a channel already spanning 0..255 is unchanged");
        PixelOps.AutoContrast(TestImages.Solid(4, 4, 7, 7, 7)).Pixels.Should().OnlyContain(v => v == 7, "a flat channel is left alone");

        // Four grey levels, 85 pixels each: step = (340 − 85) // 255 = 1, so the levels map to 0, 85, 170, 255.
        var levels = new byte[] { 10, 20, 30, 40 };
        var pixels = Enumerable.Range(0, 340).SelectMany(i => Enumerable.Repeat(levels[i % 4], 3)).ToArray();
        var equalized = PixelOps.Equalize(new RgbImage(20, 17, pixels));
        equalized.Pixels.Distinct().Order().Should().Equal(0, 85, 170, 255);
        for (int i = 0; i < pixels.Length; i++)
            equalized.Pixels[i].Should().Be((byte)(Array.IndexOf(levels, pixels[i]) * 85));
    }

    [Fact]
    public void Enhance_ops_blend_towards_their_degenerate_image()
    {
        var image = TestImages.Noise(19, 13, 2);
        PixelOps.Brightness(image, 1.0).Pixels.Should().Equal(image.Pixels);
        PixelOps.Brightness(image, 0.0).Pixels.Should().OnlyContain(v => v == 0);
        PixelOps.Sharpness(image, 1.0).Pixels.Should().Equal(image.Pixels);
        PixelOps.Contrast(image, 1.0).Pixels.Should().Equal(image.Pixels);
        PixelOps.Contrast(image, 0.0).Pixels.Distinct().Should().HaveCount(1, "contrast 0 is the mean grey");
        var grey = PixelOps.Color(image, 0.0);
        for (int i = 0; i < grey.Pixels.Length; i += 3)
        {
            grey.Pixels[i].Should().Be(grey.Pixels[i + 1]);
            grey.Pixels[i].Should().Be(PixelOps.Luma(image.Pixels[i], image.Pixels[i + 1], image.Pixels[i + 2]));
        }
        // Factor 2 doubles the distance from black, saturating: 100 → 200, 200 → 255.
        PixelOps.Brightness(TestImages.Solid(2, 2, 100, 200, 0), 2.0).Pixels.Take(3).Should().Equal(200, 255, 0);
    }

    [Fact]
    public void Geometric_ops_rotate_shear_and_translate_like_pil_with_the_mean_fill()
    {
        var image = TestImages.Noise(24, 24, 3);
        AffineWarp.Rotate(image, 0, Fill, Interpolation.Bicubic).Pixels.Should().Equal(image.Pixels);

        // 90° counter-clockwise on a square image lands exactly on pixel centres: out(x, y) = in(w − 1 − y, x).
        var quarter = AffineWarp.Rotate(image, 90, Fill, Interpolation.Bicubic);
        for (int y = 0; y < 24; y++)
            for (int x = 0; x < 24; x++)
                TestImages.Pixel(quarter, x, y).Should().Be(TestImages.Pixel(image, 23 - y, x));

        var tilted = AffineWarp.Rotate(image, 45, Fill, Interpolation.Bicubic);
        TestImages.Pixel(tilted, 0, 0).Should().Be(((byte)124, (byte)116, (byte)104), "corners rotated in from outside take the fill");

        // A whole-pixel translation copies exactly; the uncovered strip is filled.
        var shifted = AffineWarp.Translate(image, 10, 0, Fill, Interpolation.Bicubic);
        for (int y = 0; y < 24; y++)
            for (int x = 0; x < 24; x++)
                TestImages.Pixel(shifted, x, y).Should().Be(x < 14 ? TestImages.Pixel(image, x + 10, y) : ((byte)124, (byte)116, (byte)104));

        // ShearX samples the input at x' + factor·y' with pixel centres x' = x + ½, y' = y + ½ (PIL's convention):
        // factor 2 lands on pixel centres, out(x, y) = in(x + 2y + 1, y), the rest is fill.
        var sheared = AffineWarp.ShearX(image, 2.0, Fill, Interpolation.Bicubic);
        for (int y = 0; y < 5; y++)
            for (int x = 0; x < 24; x++)
                TestImages.Pixel(sheared, x, y).Should().Be(x + 2 * y + 1 < 24 ? TestImages.Pixel(image, x + 2 * y + 1, y) : ((byte)124, (byte)116, (byte)104));
        var official = Official.ApplyOp(image, AugmentOp.TranslateXRel, 0.5);
        TestImages.Pixel(official, 23, 5).Should().Be(((byte)124, (byte)116, (byte)104), "translate-rel 0.5 moves half the width");
        TestImages.Pixel(official, 0, 5).Should().Be(TestImages.Pixel(image, 12, 5));
    }

    [Fact]
    public void Randaugment_is_deterministic_per_generator_and_changes_most_images()
    {
        var image = TestImages.Gradient(32, 32);
        int changed = 0;
        for (int i = 0; i < 60; i++)
        {
            var a = Official.Apply(image, SampleRng.For(7, 0, i, RngStream.Sample));
            var b = Official.Apply(image, SampleRng.For(7, 0, i, RngStream.Sample));
            a.Pixels.Should().Equal(b.Pixels);
            if (!a.Pixels.SequenceEqual(image.Pixels)) changed++;
        }
        // Each of 2 ops is skipped with probability ½, so about ¾ of images change.
        changed.Should().BeInRange(30, 57);
    }
}
