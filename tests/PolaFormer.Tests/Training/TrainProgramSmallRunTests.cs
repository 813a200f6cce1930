using FluentAssertions;
using PolaFormer.Tests.Infrastructure;
using PolaFormer.Training.Reporting;
using Xunit;

namespace PolaFormer.Tests.Training;

/// <summary>A small custom run with the real program: one epoch on a few images at 32 px, then its weights
/// evaluated on matching, smaller and other class sets.</summary>
public sealed class TrainProgramSmallRunTests : TorchTest, IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("polaformer-cli-small-").FullName;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private static (int Exit, string Out, string Error) Run(params string[] args) => TrainProgram.Run(null, args);

    [Fact]
    public void One_epoch_at_32_px_says_its_schedule_and_eval_checks_the_classes()
    {
        var data = TrainingFixtures.WriteImageFolder(Path.Combine(_root, "two"), classes: 2, trainPerClass: 4, valPerClass: 2);
        var output = Path.Combine(_root, "run");
        var (exit, stdout, stderr) = Run("train", "--data", data, "--img-size", "32", "--epochs", "1", "--batch-size", "4",
            "--workers", "1", "--output", output);
        exit.Should().Be(0, stderr);
        var lines = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

        // The data line once, without repeating the description's counts.
        lines.Where(l => l.StartsWith("data: ", StringComparison.Ordinal)).Should().ContainSingle()
            .Which.Should().Be($"data: image folders '{data}': 8 train / 4 val images, 2 classes");
        lines.Should().Contain(l => l.StartsWith("model: pola_pvt_tiny, 32 px, 1 epoch, batch 4, device cpu", StringComparison.Ordinal));
        // The ImageNet recipe's 20 warmup epochs fit a run of one epoch by clamping, said on the first lines, and the
        // learning rates are printed after linear scaling with the rule.
        int clamp = Array.IndexOf(lines, "warmup 20 epochs > half the run of 1 epoch: clamped to 0.5 epoch");
        clamp.Should().BeInRange(0, 3, stdout);
        lines[clamp + 1].Should().Be("lr 5e-4 per 512 images × 4/512 = 3.91e-6 (warmup from 3.91e-9, cosine to 3.91e-8)");
        lines.Should().ContainSingle(l => l.StartsWith("validation top-1: ", StringComparison.Ordinal), "the folder's val/ split is validation");
        stdout.Should().NotContain("test top-1").And.NotContain("1 epochs");
        MetricsCsv.Read(Path.Combine(output, "metrics.csv")).Should().ContainSingle().Which.Epoch.Should().Be(1);
        var weights = Path.Combine(output, "model.safetensors");

        // The same classes: evaluated at the training size.
        var same = Run("eval", "--checkpoint", weights, "--data", data, "--img-size", "32", "--workers", "1");
        same.Exit.Should().Be(0, same.Error);
        same.Out.Should().Contain("validation split at 32 px: top-1 ").And.Contain(", 4 images,");

        // A subset of the checkpoint's classes by name: relabelled and said so.
        var one = TrainingFixtures.WriteImageFolder(Path.Combine(_root, "one"), classes: 1, trainPerClass: 1, valPerClass: 3);
        var subset = Run("eval", "--checkpoint", weights, "--data", one, "--img-size", "32", "--workers", "1");
        subset.Exit.Should().Be(0, subset.Error);
        subset.Out.Should().Contain("classes: the dataset's 1 classes are a subset of the checkpoint's 2 by name; its labels are mapped to the checkpoint's numbering")
            .And.Contain(", 3 images,");

        // Other classes: one line naming both counts, never a silent 0 %.
        var three = TrainingFixtures.WriteImageFolder(Path.Combine(_root, "three"), classes: 3, trainPerClass: 1, valPerClass: 1);
        TrainProgram.ShouldFailWithOneLine(Run("eval", "--checkpoint", weights, "--data", three, "--img-size", "32"),
            $"error: Checkpoint '{weights}' classifies 2 classes (class0, class1) but image folders '{three}'*has 3 (class0, class1, class2), 1 of them not among the checkpoint's (class2)*");
        // A training checkpoint records no class names: the counts are compared.
        var checkpoint = Path.Combine(output, "epoch-0001.ckpt");
        TrainProgram.ShouldFailWithOneLine(Run("eval", "--checkpoint", checkpoint, "--data", three, "--img-size", "32"),
            $"error: Checkpoint '{checkpoint}' has a 2-class head but image folders '{three}'*has 3 (class0, class1, class2); expected a dataset with the checkpoint's 2 classes*");
    }

    [Fact]
    public void Image_size_is_validated_before_any_work()
    {
        var output = Path.Combine(_root, "out");
        TrainProgram.ShouldFailWithOneLine(Run("train", "--img-size", "0", "--output", output),
            "error: --img-size is 0; expected a positive number of pixels*");
        TrainProgram.ShouldFailWithOneLine(Run("train", "--img-size", "33", "--output", output),
            "error: --img-size 33 does not suit pola_pvt_tiny: options.ImageSize is 33 × 33; expected *multiples of 4*");
        TrainProgram.ShouldFailWithOneLine(Run("eval", "--checkpoint", Path.Combine(_root, "none.safetensors"), "--img-size", "-8"),
            "error: --img-size is -8; expected a positive number of pixels*");
        Directory.Exists(output).Should().BeFalse("nothing is written before the size is checked");
    }

    [Fact]
    public void Library_errors_are_shown_with_the_flag_that_sets_the_option()
    {
        TrainProgram.ShouldFailWithOneLine(Run("train", "--warmup-epochs", "-1", "--output", Path.Combine(_root, "out")),
            "error: --warmup-epochs is -1; expected 0 or more*");
        TrainProgram.ShouldFailWithOneLine(Run("train", "--dtype", "float8", "--output", Path.Combine(_root, "out")),
            "error: --dtype is 'float8'; expected float32, bfloat16 or float16.");
    }
}
