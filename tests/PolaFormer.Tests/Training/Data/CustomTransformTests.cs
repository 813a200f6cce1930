using FluentAssertions;
using PolaFormer.Tests.Infrastructure;
using PolaFormer.Training;
using PolaFormer.Training.Data;
using PolaFormer.Training.Reporting;
using Xunit;

namespace PolaFormer.Tests.Training.Data;

/// <summary>A user's own 8-bit stage (<see cref="IImageTransform"/>) composed onto the recipe's pipelines with
/// <see cref="ImagePipeline.Append"/>, and given to the <see cref="Trainer"/> through
/// <see cref="TrainerComponents.TrainPipeline"/>.</summary>
public sealed class CustomTransformTests : TorchTest, IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("polaformer-transform-").FullName;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    /// <summary>Photographic negative, counting its calls.</summary>
    private sealed class Invert : IImageTransform
    {
        private int _calls;

        public int Calls => Volatile.Read(ref _calls);

        public RgbImage Apply(RgbImage image, SampleRng rng)
        {
            Interlocked.Increment(ref _calls);
            var pixels = image.Pixels.Select(p => (byte)(255 - p)).ToArray();
            return new RgbImage(image.Width, image.Height, pixels);
        }

        public override string ToString() => "Invert";
    }

    private sealed class Shrink : IImageTransform
    {
        public RgbImage Apply(RgbImage image, SampleRng rng) => new(1, 1, [0, 0, 0]);
    }

    private static RgbImage Gradient(int size)
    {
        var pixels = new byte[size * size * 3];
        for (int i = 0; i < pixels.Length; i++) pixels[i] = (byte)(i * 7 % 256);
        return new RgbImage(size, size, pixels);
    }

    [Fact]
    public void An_appended_stage_runs_after_the_recipes_stages_and_before_normalisation()
    {
        // Evaluation at the image's own size with crop fraction 1: the recipe's stages leave it unchanged, so the
        // pipeline with the negative must give exactly what the plain pipeline gives for the negative image.
        var recipe = DataRecipe.ImageNet with { ImageSize = 24, CropPct = 1 };
        var image = Gradient(24);
        var invert = new Invert();
        var inverted = invert.Apply(image, new SampleRng(0));

        var withStage = ImagePipeline.Eval(recipe).Append(invert);

        withStage.Process(image).Should().Equal(ImagePipeline.Eval(recipe).Process(inverted));
        withStage.Stages.Should().ContainInOrder(ImagePipeline.Eval(recipe).Stages[0], "Invert", ImagePipeline.Eval(recipe).Stages[1]);
        ImagePipeline.Eval(recipe).Stages.Should().NotContain("Invert", "Append returns a new pipeline");
    }

    [Fact]
    public void A_stage_that_changes_the_size_is_refused_when_it_runs()
    {
        var pipeline = ImagePipeline.Eval(DataRecipe.ImageNet with { ImageSize = 24, CropPct = 1 }).Append(new Shrink());
        pipeline.Invoking(p => p.Process(Gradient(24))).Should().Throw<InvalidOperationException>().WithMessage("*1×1*expected 24×24*");
    }

    [Fact]
    public void The_trainer_trains_through_the_callers_pipeline()
    {
        var folder = TrainingFixtures.WriteImageFolder(Path.Combine(_root, "data"), classes: 3, trainPerClass: 8, valPerClass: 4);
        var data = Datasets.Open(folder) with { Recipe = TrainingFixtures.SmallImageNetRecipe };
        var invert = new Invert();
        var components = new TrainerComponents { TrainPipeline = recipe => ImagePipeline.Train(recipe).Append(invert) };
        var trainer = new Trainer(TrainerTests.Options(epochs: 1) with { ModelEma = false }, data, Path.Combine(_root, "run"),
            new ProgressReporter(new StringWriter(), live: false), TrainingFixtures.TinyPvt, components: components);

        trainer.Run();

        invert.Calls.Should().Be(24, "every training image of the epoch went through the caller's stage once");
    }

    [Fact]
    public void The_recipes_own_transforms_rebuild_its_pipelines_and_compose_in_any_selection()
    {
        var recipe = DataRecipe.ImageNet with { ImageSize = 24, RandomErasing = 0.25 };
        var image = Gradient(40);
        var train = ImagePipeline.Train(recipe);
        train.Transforms.Select(t => t.GetType()).Should().Equal(typeof(RandomResizedCrop), typeof(HorizontalFlip), typeof(RandAugment));

        // The same stages through FromTransforms: the same floats for every sample (random erasing included).
        var rebuilt = ImagePipeline.FromTransforms(recipe, train.Transforms, training: true);
        for (int index = 0; index < 8; index++)
            rebuilt.Process(image, seed: 5, epoch: 1, index: index).Should().Equal(train.Process(image, seed: 5, epoch: 1, index: index));

        // A selection built from the public constructors equals the same selection taken from the recipe's pipeline.
        var selected = ImagePipeline.FromTransforms(recipe, train.Transforms.Where(t => t is not RandAugment), training: false);
        var byHand = ImagePipeline.FromTransforms(recipe,
            [new RandomResizedCrop(24, recipe.Scale, recipe.Ratio, recipe.Interpolation), new HorizontalFlip(recipe.HorizontalFlip)], training: false);
        for (int index = 0; index < 8; index++)
            byHand.Process(image, seed: 5, epoch: 1, index: index).Should().Equal(selected.Process(image, seed: 5, epoch: 1, index: index));

        var eval = ImagePipeline.Eval(recipe);
        ImagePipeline.FromTransforms(recipe, eval.Transforms, training: false).Process(image).Should().Equal(eval.Process(image));
        var crop = new ResizeCenterCrop(24, 27, PolaFormer.Pretrained.ResizeMode.ShorterSide, Interpolation.Bicubic);
        ImagePipeline.FromTransforms(recipe, [crop], training: false).Process(image).Should().Equal(eval.Process(image),
            "the recipe's evaluation is resize to ⌊24 / 0.875⌋ = 27 and a 24-pixel centre crop");

        // A last stage of another size is named at the first sample.
        FluentActions.Invoking(() => ImagePipeline.FromTransforms(recipe, [new HorizontalFlip(1)], training: false).Process(image))
            .Should().Throw<InvalidOperationException>().WithMessage("The pipeline produced 40×40; expected 24×24.");
    }

    [Fact]
    public void The_built_in_transforms_refuse_values_out_of_range_naming_them()
    {
        FluentActions.Invoking(() => new HorizontalFlip(1.5)).Should().Throw<ArgumentOutOfRangeException>()
            .WithMessage("probability is 1.5; expected a value in [0, 1].*").Which.ParamName.Should().Be("probability");
        FluentActions.Invoking(() => new HorizontalFlip(double.NaN)).Should().Throw<ArgumentOutOfRangeException>();
        FluentActions.Invoking(() => new ColorJitter(-0.1)).Should().Throw<ArgumentOutOfRangeException>()
            .WithMessage("strength is -0.1; expected a finite value of 0 or more.*");
        FluentActions.Invoking(() => new RandomResizedCrop(0, (0.08, 1), (0.75, 4 / 3.0), Interpolation.Bicubic))
            .Should().Throw<ArgumentOutOfRangeException>().WithMessage("size is 0; expected 1 or more pixels.*");
        FluentActions.Invoking(() => new RandomResizedCrop(24, (0.5, 0.2), (0.75, 4 / 3.0), Interpolation.Bicubic))
            .Should().Throw<ArgumentOutOfRangeException>().WithMessage("scale is (0.5, 0.2); expected 0 < Min ≤ Max ≤ 1*");
        FluentActions.Invoking(() => new RandomResizedCrop(24, (0.08, 1), (0, 1), Interpolation.Bicubic))
            .Should().Throw<ArgumentOutOfRangeException>().WithMessage("ratio is (0, 1); expected finite 0 < Min ≤ Max*");
        FluentActions.Invoking(() => new ResizeCenterCrop(24, 20, PolaFormer.Pretrained.ResizeMode.Squash, Interpolation.Bilinear))
            .Should().Throw<ArgumentOutOfRangeException>().WithMessage("resizeTo is 20; expected at least the crop size 24.*");
        FluentActions.Invoking(() => RandAugment.Parse("rand-x9", (0, 0, 0), Interpolation.Bicubic)).Should().Throw<FormatException>()
            .WithMessage("RandAugment section 'x9' in 'rand-x9' is unknown; supported keys: m, n, mstd, inc.");
    }
}
