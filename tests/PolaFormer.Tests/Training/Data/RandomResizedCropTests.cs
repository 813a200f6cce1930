using FluentAssertions;
using PolaFormer.Training.Data;
using Xunit;

namespace PolaFormer.Tests.Training.Data;

public sealed class RandomResizedCropTests
{
    private static readonly RandomResizedCrop Crop = new(224, (0.08, 1.0), (3.0 / 4.0, 4.0 / 3.0), Interpolation.Bicubic);

    [Fact]
    public void Crops_cover_the_area_and_log_aspect_ranges_and_stay_inside_the_image()
    {
        const int width = 1000, height = 800;
        double minFraction = 1, maxFraction = 0, minLog = 1, maxLog = -1;
        for (int i = 0; i < 4000; i++)
        {
            var (left, top, w, h) = Crop.SampleBox(width, height, SampleRng.For(1, 0, i, RngStream.Sample));
            left.Should().BeGreaterThanOrEqualTo(0);
            top.Should().BeGreaterThanOrEqualTo(0);
            (left + w).Should().BeLessThanOrEqualTo(width);
            (top + h).Should().BeLessThanOrEqualTo(height);
            double fraction = (double)w * h / (width * height);
            double logAspect = Math.Log((double)w / h);
            if (w == width && h == height) continue; // the fallback (whole image) is allowed
            // Whole-pixel rounding moves the area by well under 1 % at these sizes.
            fraction.Should().BeInRange(0.08 * 0.99, 1.0);
            logAspect.Should().BeInRange(Math.Log(0.75) - 0.01, Math.Log(4.0 / 3.0) + 0.01);
            minFraction = Math.Min(minFraction, fraction);
            maxFraction = Math.Max(maxFraction, fraction);
            minLog = Math.Min(minLog, logAspect);
            maxLog = Math.Max(maxLog, logAspect);
        }
        minFraction.Should().BeLessThan(0.09, "small crops down to 8 % of the area occur");
        maxFraction.Should().BeGreaterThan(0.9, "near-full crops occur");
        minLog.Should().BeLessThan(Math.Log(0.77));
        maxLog.Should().BeGreaterThan(Math.Log(1.3));
    }

    [Fact]
    public void An_extreme_aspect_falls_back_to_torchvisions_centre_crop()
    {
        // 400×20 is too wide for every try (h ≥ √(0.08·8000·3/4) ≈ 21.9 > 20), so the fallback runs:
        // h = 20, w = round(20 · 4/3) = 27, left = (400 − 27) // 2 = 186.
        var rng = SampleRng.For(0, 0, 0, RngStream.Sample);
        Crop.SampleBox(400, 20, rng).Should().Be((186, 0, 27, 20));
        Crop.SampleBox(20, 400, rng).Should().Be((0, 186, 20, 27));
        Crop.CentreFallback(300, 250).Should().Be((0, 0, 300, 250), "an in-range ratio keeps the whole image");

        var image = TestImages.Gradient(400, 20);
        var output = Crop.Apply(image, SampleRng.For(0, 0, 0, RngStream.Sample));
        output.Width.Should().Be(224);
        output.Pixels.Should().Equal(Resampler.ResizeRegion(image, 186, 0, 27, 20, 224, 224, Interpolation.Bicubic).Pixels);
    }

    [Fact]
    public void Resizing_is_pil_like_identity_constant_preserving_and_antialiased()
    {
        var gradient = TestImages.Gradient(37, 23);
        Resampler.Resize(gradient, 37, 23, Interpolation.Bicubic).Pixels.Should().Equal(gradient.Pixels);

        var solid = TestImages.Solid(97, 61, 13, 200, 255);
        Resampler.Resize(solid, 224, 224, Interpolation.Bicubic).Pixels.Should().OnlyContain(v => v == 13 || v == 200 || v == 255);
        Resampler.Resize(solid, 20, 11, Interpolation.Bicubic).Pixels.Should().OnlyContain(v => v == 13 || v == 200 || v == 255);

        // One-pixel stripes downscaled 4×: PIL widens the kernel, so the result is the average grey, not aliasing.
        var stripes = new RgbImage(256, 8, Enumerable.Range(0, 256 * 8 * 3).Select(i => (byte)((i / 3) % 2 == 0 ? 0 : 255)).ToArray());
        var small = Resampler.Resize(stripes, 64, 8, Interpolation.Bicubic);
        for (int x = 2; x < 62; x++) TestImages.Pixel(small, x, 4).R.Should().BeInRange(125, 130);

        // A linear ramp keeps its geometry: output pixel x samples around source 2x + 0.5.
        var ramp = new RgbImage(256, 4, Enumerable.Range(0, 256 * 4 * 3).Select(i => (byte)((i / 3) % 256)).ToArray());
        var half = Resampler.Resize(ramp, 128, 4, Interpolation.Bicubic);
        for (int x = 3; x < 125; x++) ((double)TestImages.Pixel(half, x, 1).R).Should().BeApproximately(2 * x + 0.5, 1.0);
    }
}
