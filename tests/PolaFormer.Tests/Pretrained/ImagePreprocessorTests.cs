using FluentAssertions;
using PolaFormer.Pretrained;
using PolaFormer.Tests.Infrastructure;
using PolaFormer.Tests.Training;
using PolaFormer.Training.Data;
using Xunit;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Pretrained;

/// <summary>
/// The tensor-in evaluation preprocessing (<see cref="ImagePreprocessor"/>): sizes as timm's evaluation transform
/// computes them, exact normalisation, the centre crop's position, batches, errors naming the input, and agreement
/// with the training library's PIL-equivalent evaluation pipeline on a real decoded image.
/// </summary>
public sealed class ImagePreprocessorTests : TorchTest
{
    private static readonly PretrainedConfig ImageNet = new() { ModelName = "test" };
    private static readonly PretrainedConfig ShorterSide = ImageNet with { Resize = ResizeMode.ShorterSide };

    [Theory]
    [InlineData(480, 640, 256, 341)]   // torchvision Resize(256): the shorter side to 256, the other int(256·640/480)
    [InlineData(640, 480, 341, 256)]
    [InlineData(256, 256, 256, 256)]
    [InlineData(100, 300, 256, 768)]
    public void The_resize_target_is_size_over_crop_fraction_on_the_shorter_side_or_on_both(long height, long width, long expectedHeight, long expectedWidth)
    {
        new ImagePreprocessor(ShorterSide).ResizeTarget(height, width).Should().Be((expectedHeight, expectedWidth));
        new ImagePreprocessor(ImageNet).ResizeTarget(height, width).Should().Be((256L, 256L), "the authors' evaluation squashes");
    }

    [Fact]
    public void A_non_square_input_size_resizes_both_sides_by_the_crop_fraction()
    {
        new ImagePreprocessor(ShorterSide with { InputSize = (224, 320) }).ResizeTarget(500, 500).Should().Be((256L, 365L));
    }

    [Fact]
    public void A_one_colour_image_becomes_its_normalised_colour_exactly()
    {
        using var image = zeros([3, 300, 400], ScalarType.Byte);
        image[0].fill_(200);
        image[1].fill_(100);
        image[2].fill_(30);

        using var output = new ImagePreprocessor(ImageNet).Apply(image);

        output.shape.Should().Equal(1, 3, 224, 224);
        output.dtype.Should().Be(ScalarType.Float32);
        double[] expected = [(200 / 255.0 - 0.485) / 0.229, (100 / 255.0 - 0.456) / 0.224, (30 / 255.0 - 0.406) / 0.225];
        for (int c = 0; c < 3; c++)
        {
            output[0, c].min().item<float>().Should().BeApproximately((float)expected[c], 2e-6f);
            output[0, c].max().item<float>().Should().BeApproximately((float)expected[c], 2e-6f);
        }
    }

    [Fact]
    public void Without_resizing_the_image_is_cropped_in_the_middle_with_torchvisions_rounding()
    {
        var config = new PretrainedConfig
        {
            ModelName = "test", InputSize = (4, 6), CropFraction = 1, Mean = new(0, 0, 0), Std = new(1, 1, 1), Resize = ResizeMode.ShorterSide,
        };
        using var exact = arange(3 * 4 * 6, dtype: ScalarType.Float32).reshape(3, 4, 6) / 100.0;
        using var same = new ImagePreprocessor(config).Apply(exact);
        same.eq(exact.unsqueeze(0)).all().item<bool>().Should().BeTrue("an image of exactly the input size passes unchanged");

        // A square input size of 4: a 4-row image keeps its width (shorter side already 4) and loses the excess
        // columns around the middle, from column int(round(excess / 2)), Python's round being half to even.
        var square = config with { InputSize = (4, 4) };
        foreach (var (width, left) in new[] { (5L, 0L), (6L, 1L), (7L, 2L), (9L, 2L) })
        {
            using var image = arange(3 * 4 * width, dtype: ScalarType.Float32).reshape(3, 4, width) / 100.0;
            using var cropped = new ImagePreprocessor(square).Apply(image);
            using var expected = image.narrow(2, left, 4).unsqueeze(0);
            cropped.eq(expected).all().item<bool>().Should().BeTrue($"a width of {width} is cropped from column {left}");
        }
    }

    [Fact]
    public void A_batch_is_the_images_one_by_one()
    {
        manual_seed(3);
        using var batch = rand(2, 3, 180, 240);
        var preprocess = new ImagePreprocessor(ImageNet with { InputSize = (96, 96) });

        using var together = preprocess.Apply(batch);
        using var first = preprocess.Apply(batch[0]);
        using var second = preprocess.Apply(batch[1]);

        together.shape.Should().Equal(2, 3, 96, 96);
        together[0].eq(first[0]).all().item<bool>().Should().BeTrue();
        together[1].eq(second[0]).all().item<bool>().Should().BeTrue();
    }

    [Fact]
    public void It_agrees_with_the_training_librarys_evaluation_pipeline_on_a_decoded_image()
    {
        // Two independent implementations of timm's evaluation transform: LibTorch's antialiased bicubic on tensors
        // here, the training library's PIL-equivalent resampler on bytes there. They agree to a few 1/255 steps
        // (PIL's bicubic kernel uses a = −0.5, LibTorch's a = −0.75), not bit for bit.
        // A smooth photograph-like image (resampling filters differ most on pixel noise, least on smooth content),
        // through JPEG-free bytes so both sides start from the same pixels.
        const int width = 400, height = 300;
        var pixels = new byte[width * height * 3];
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
            {
                int o = 3 * (y * width + x);
                pixels[o] = (byte)(128 + 100 * Math.Sin(x / 17.0) * Math.Cos(y / 23.0));
                pixels[o + 1] = (byte)(128 + 90 * Math.Sin((x + y) / 31.0));
                pixels[o + 2] = (byte)(40 + 0.5 * x * y / height);
            }
        var image = new RgbImage(width, height, pixels);
        using var bytes = image.ToTensor();
        foreach (var (mode, config) in new[] { (ResizeMode.Squash, ImageNet), (ResizeMode.ShorterSide, ShorterSide) })
        {
            var pipeline = ImagePipeline.Eval(DataRecipe.ImageNet with { ImageSize = 224, EvalResize = mode });
            using var reference = tensor(pipeline.Process(image), [1, 3, 224, 224]);
            using var output = new ImagePreprocessor(config).Apply(bytes);

            using var difference = (output - reference).abs();
            const double step = 1.0 / 255 / 0.224;   // one 8-bit step after normalisation, at most
            difference.mean().item<float>().Should().BeLessThan((float)step, $"{mode}: on average within one 8-bit step");
            difference.max().item<float>().Should().BeLessThan((float)(4 * step), $"{mode}: nowhere more than a few steps");
        }
    }

    [Fact]
    public void Wrong_images_are_refused_with_the_shape_or_dtype_named()
    {
        var preprocess = new ImagePreprocessor(ImageNet);
        using var flat = zeros(224, 224);
        using var rgba = zeros(4, 224, 224);
        using var integers = zeros([3, 224, 224], ScalarType.Int32);

        preprocess.Invoking(p => p.Apply(flat)).Should().Throw<ArgumentException>()
            .WithMessage("images has shape (224, 224); expected (3, H, W) or (B, 3, H, W)*").Which.ParamName.Should().Be("images");
        preprocess.Invoking(p => p.Apply(rgba)).Should().Throw<ArgumentException>().WithMessage("images has shape (4, 224, 224)*");
        preprocess.Invoking(p => p.Apply(integers)).Should().Throw<ArgumentException>().WithMessage("images has dtype Int32; expected Byte*");
        FluentActions.Invoking(() => new ImagePreprocessor(ImageNet with { CropFraction = 0 })).Should().Throw<ArgumentException>()
            .WithMessage("config.CropFraction is 0; expected a fraction in (0, 1]*");
    }

    [Fact]
    public void For_a_registered_model_it_takes_the_pretrained_configuration_or_the_models_size()
    {
        ImagePreprocessor.ForModel("pola_swin_tiny").Config.Should().Be(PretrainedConfigs.Get("pola_swin_tiny"));
        ImagePreprocessor.ForModel("pola_pvt_tiny", inputSize: (64, 64)).Config.InputSize.Should().Be((64L, 64L));
        FluentActions.Invoking(() => ImagePreprocessor.ForModel("no_such_model")).Should().Throw<ArgumentException>();
    }
}
