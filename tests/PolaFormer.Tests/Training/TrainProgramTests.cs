using System.Diagnostics;
using FluentAssertions;
using PolaFormer.Tests.Infrastructure;
using Xunit;

namespace PolaFormer.Tests.Training;

/// <summary>The sample program as a user runs it: bad input is one line that says what to fix, and a non-zero exit.</summary>
public sealed class TrainProgramTests : TorchTest, IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("polaformer-cli-").FullName;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private static (int Exit, string Out, string Error) Run(params string[] args) => TrainProgram.Run(null, args);

    private static void ShouldFailWithOneLine((int Exit, string Out, string Error) result, string expected) =>
        TrainProgram.ShouldFailWithOneLine(result, expected);

    [Fact]
    public void Missing_data_folder()
    {
        ShouldFailWithOneLine(Run("train", "--data", Path.Combine(_root, "nowhere"), "--output", Path.Combine(_root, "out")),
            "*nowhere*does not exist*train/ and val/*");
    }

    [Fact]
    public void Empty_data_folder_and_class_folder_without_readable_images()
    {
        var empty = Directory.CreateDirectory(Path.Combine(_root, "empty")).FullName;
        ShouldFailWithOneLine(Run("train", "--data", empty, "--output", Path.Combine(_root, "out")), "*no train/ sub-folder*");

        var data = Path.Combine(_root, "bad");
        Directory.CreateDirectory(Path.Combine(data, "train", "cats"));
        Directory.CreateDirectory(Path.Combine(data, "val", "cats"));
        File.WriteAllText(Path.Combine(data, "train", "cats", "0.jpg"), "not an image");
        ShouldFailWithOneLine(Run("train", "--data", data, "--output", Path.Combine(_root, "out")), "*cats*readable*");
    }

    [Fact]
    public void Unknown_model_and_zero_batch_size()
    {
        ShouldFailWithOneLine(Run("train", "--model", "pola_resnet50", "--output", Path.Combine(_root, "out")), "*Unknown model 'pola_resnet50'*");
        ShouldFailWithOneLine(Run("train", "--batch-size", "0", "--output", Path.Combine(_root, "out")), "*--batch-size is 0*at least 1*");
    }

    [Fact]
    public void Help_shows_the_recipe_defaults()
    {
        var (exit, output, _) = Run("train", "--help");
        exit.Should().Be(0);
        output.Should().Contain("--clip-grad").And.Contain("[default: 5]").And.Contain("--weight-decay").And.Contain("[default: 0.05]")
            .And.Contain("--resume").And.Contain("--workers");
    }
}
