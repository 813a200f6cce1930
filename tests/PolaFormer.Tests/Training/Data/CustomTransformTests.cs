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
}
