using PolaFormer.Pretrained;
using FluentAssertions;
using PolaFormer.Training.Data;
using Xunit;

namespace PolaFormer.Tests.Training.Data;

public sealed class EvalTransformTests
{
    [Theory]
    [InlineData(ResizeMode.Squash)]
    [InlineData(ResizeMode.ShorterSide)]
    public void A_500x375_image_is_resized_and_centre_cropped_to_224_removing_its_border(ResizeMode mode)
    {
        // 10-pixel red border round a green-ish interior: the 224/256 centre crop cuts it away.
        var image = TestImages.Solid(500, 375, 90, 160, 30);
        for (int y = 0; y < 375; y++)
            for (int x = 0; x < 500; x++)
                if (x < 10 || y < 10 || x >= 490 || y >= 365)
                {
                    int o = (y * 500 + x) * 3;
                    image.Pixels[o] = 255;
                    image.Pixels[o + 1] = image.Pixels[o + 2] = 0;
                }
        var pipeline = ImagePipeline.Eval(DataRecipe.ImageNet with { EvalResize = mode });
        var output = pipeline.Augment(image, SampleRng.For(0, 0, 0, RngStream.Sample));
        output.Width.Should().Be(224);
        output.Height.Should().Be(224);
        for (int i = 0; i < output.Pixels.Length; i += 3)
        {
            output.Pixels[i].Should().BeInRange(89, 91);
            output.Pixels[i + 1].Should().BeInRange(159, 161);
            output.Pixels[i + 2].Should().BeInRange(29, 31);
        }
    }

    [Theory]
    [InlineData(ResizeMode.Squash, 256, 256, 16, 16)]
    [InlineData(ResizeMode.ShorterSide, 341, 256, 58, 16)] // width ⌊256·500/375⌋ = 341, left round(58.5) = 58 (half to even)
    public void The_crop_window_is_torchvisions(ResizeMode mode, int resizedWidth, int resizedHeight, int left, int top)
    {
        var transform = new ResizeCenterCrop(224, 256, mode, Interpolation.Bicubic);
        transform.ResizedSize(500, 375).Should().Be((resizedWidth, resizedHeight));
        var image = TestImages.Gradient(500, 375);
        var output = transform.Apply(image);
        // R = 255·x/499 and G = 255·y/374 are linear, so the output samples them at the mapped centres.
        for (int u = 4; u < 220; u += 7)
        {
            double sourceX = (u + left + 0.5) * 500.0 / resizedWidth - 0.5;
            double sourceY = (u + top + 0.5) * 375.0 / resizedHeight - 0.5;
            ((double)TestImages.Pixel(output, u, 100).R).Should().BeApproximately(255 * sourceX / 499, 1.6);
            ((double)TestImages.Pixel(output, 100, u).G).Should().BeApproximately(255 * sourceY / 374, 1.6);
        }
    }

    [Fact]
    public void Normalisation_is_to_tensor_then_imagenet_mean_and_std()
    {
        var pipeline = ImagePipeline.Eval(DataRecipe.ImageNet with { ImageSize = 8, CropPct = 1.0 });
        var output = pipeline.Process(TestImages.Solid(8, 8, 0, 128, 255));
        output.Should().HaveCount(3 * 64);
        output[0].Should().BeApproximately((0f - 0.485f) / 0.229f, 1e-6f);
        output[64].Should().BeApproximately((128 / 255f - 0.456f) / 0.224f, 1e-6f);
        output[128 + 63].Should().BeApproximately((1f - 0.406f) / 0.225f, 1e-6f);
    }

    [Fact]
    public void The_official_train_pipeline_skips_colour_jitter_when_randaugment_is_on_like_timm()
    {
        var recipe = DataRecipe.ImageNet;
        recipe.FillColour.Should().Be(((byte)124, (byte)116, (byte)104));
        recipe.EvalResizeSize.Should().Be(256);
        var train = ImagePipeline.Train(recipe);
        train.Stages.Should().Contain(s => s.StartsWith("RandAugment(n=2, m=9, mstd=0.5"));
        train.Stages.Should().NotContain(s => s.StartsWith("ColorJitter("));
        train.Stages.Should().Contain(s => s.StartsWith("ColorJitter skipped (strength 0.4"));
        train.Stages.Should().Contain(s => s.StartsWith("RandomErasing(p=0.25"));

        var noAutoAugment = ImagePipeline.Train(recipe with { AutoAugment = null });
        noAutoAugment.Stages.Should().Contain(s => s.StartsWith("ColorJitter(brightness=0.4"));

        var digits = ImagePipeline.Train(DataRecipe.Digits);
        digits.OutputSize.Should().Be(32);
        digits.Stages.Should().NotContain(s => s.Contains("Flip") || s.Contains("RandAugment") || s.Contains("Erasing"));
    }

    [Fact]
    public void Invalid_recipes_are_rejected_with_the_field_named()
    {
        FluentActions.Invoking(() => ImagePipeline.Train(DataRecipe.ImageNet with { Scale = (0.5, 0.2) }))
            .Should().Throw<ArgumentException>().WithMessage("*DataRecipe.Scale*");
        FluentActions.Invoking(() => ImagePipeline.Train(DataRecipe.ImageNet with { AutoAugment = "augmix-m5" }))
            .Should().Throw<NotSupportedException>().WithMessage("*augmix-m5*");
        FluentActions.Invoking(() => ImagePipeline.Eval(DataRecipe.ImageNet with { CropPct = 1.5 }))
            .Should().Throw<ArgumentException>().WithMessage("*CropPct*");
    }
}
