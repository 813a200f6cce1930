using FluentAssertions;
using PolaFormer.Training.Data;
using SkiaSharp;
using Xunit;

namespace PolaFormer.Tests.Training.Data;

public sealed class ImageFolderDatasetTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "polaformer-data-" + Guid.NewGuid().ToString("N"));
    private readonly List<string> _warnings = [];

    public ImageFolderDatasetTests() => Directory.CreateDirectory(_root);

    public void Dispose()
    {
        if (Directory.Exists(_root)) Directory.Delete(_root, recursive: true);
    }

    private static void Write(string path, int width, int height, byte r, byte g, byte b, SKEncodedImageFormat format)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        using var bitmap = new SKBitmap(width, height, SKColorType.Rgba8888, SKAlphaType.Unpremul);
        bitmap.Erase(new SKColor(r, g, b));
        using var file = File.Create(path);
        bitmap.Encode(file, format, 95).Should().BeTrue();
    }

    private string Class(string root, string name) => Path.Combine(_root, root, name);

    private ImageFolderDataset Open(string folder, IReadOnlyList<string>? classes = null) =>
        ImageFolderDataset.Open(Path.Combine(_root, folder), classes, warn: _warnings.Add);

    private static void ShouldBeOneLine(Exception e, string mentions)
    {
        e.Message.Should().NotContain("\n");
        e.Message.Should().Contain(mentions);
    }

    [Fact]
    public void Classes_are_sorted_ordinally_and_jpeg_and_png_files_are_labelled_by_folder()
    {
        Write(Path.Combine(Class("set", "b_cat"), "2.png"), 30, 20, 10, 200, 30, SKEncodedImageFormat.Png);
        Write(Path.Combine(Class("set", "b_cat"), "1.JPEG"), 30, 20, 200, 40, 40, SKEncodedImageFormat.Jpeg);
        Write(Path.Combine(Class("set", "a_dog"), "x.jpg"), 25, 25, 0, 0, 255, SKEncodedImageFormat.Jpeg);
        Write(Path.Combine(Class("set", "C_upper"), "nested", "y.jpeg"), 16, 40, 128, 128, 128, SKEncodedImageFormat.Jpeg);
        File.WriteAllText(Path.Combine(Class("set", "a_dog"), "notes.txt"), "not an image");

        var dataset = Open("set");
        dataset.ClassNames.Should().Equal("C_upper", "a_dog", "b_cat"); // ordinal: upper case first, like Python's sorted
        dataset.Count.Should().Be(4);
        Enumerable.Range(0, 4).Select(dataset.Label).Should().Equal(0, 1, 2, 2);
        Path.GetFileName(dataset.Source(2)).Should().Be("1.JPEG");

        dataset.TryLoadImage(3, out var png).Should().BeTrue();
        (png!.Width, png.Height).Should().Be((30, 20));
        png.Pixels.Take(3).Should().Equal(10, 200, 30);
        dataset.TryLoadImage(2, out var jpeg).Should().BeTrue();
        TestImages.Pixel(jpeg!, 15, 10).R.Should().BeInRange(190, 210, "JPEG is lossy but close");
        dataset.SkippedImages.Should().Be(0);
        _warnings.Should().BeEmpty();
    }

    [Fact]
    public void Unreadable_images_are_skipped_with_one_warning_each_and_counted()
    {
        Write(Path.Combine(Class("set", "a"), "good.jpg"), 20, 20, 1, 2, 3, SKEncodedImageFormat.Jpeg);
        File.WriteAllBytes(Path.Combine(Class("set", "a"), "000_garbage.jpg"), Enumerable.Repeat((byte)0x5A, 500).ToArray());
        File.WriteAllBytes(Path.Combine(Class("set", "a"), "zzz_garbage.jpg"), [0xFF, 0xD8, 0xFF, 0x00, 1, 2, 3]);

        var dataset = Open("set");
        dataset.Count.Should().Be(3);
        dataset.SkippedImages.Should().Be(1, "the probe for a readable image stopped at the first good file, after one bad one");
        dataset.TryLoadImage(2, out _).Should().BeFalse();
        dataset.TryLoadImage(2, out _).Should().BeFalse();
        dataset.SkippedImages.Should().Be(2);
        _warnings.Should().HaveCount(2).And.OnlyContain(w => w.Contains("garbage.jpg") && !w.Contains('\n'));

        var loader = new BatchLoader(dataset, ImagePipeline.Eval(DataRecipe.ImageNet with { ImageSize = 16 }),
            new BatchLoaderOptions { BatchSize = 3, Shuffle = false, DropLast = false, Workers = 1 });
        var batch = loader.Epoch(0).Single();
        batch.Indices.Should().Equal(new[] { 1, 1, 1 }, "both bad files are replaced by the good one");
        batch.Dispose();
    }

    [Fact]
    public void Bad_folders_fail_with_one_line_that_names_the_path_and_the_fix()
    {
        ShouldBeOneLine(FluentActions.Invoking(() => Open("missing")).Should().Throw<DirectoryNotFoundException>().Which,
            Path.Combine(_root, "missing"));

        Directory.CreateDirectory(Path.Combine(_root, "empty"));
        ShouldBeOneLine(FluentActions.Invoking(() => Open("empty")).Should().Throw<InvalidDataException>().Which, "is empty");

        Write(Path.Combine(_root, "flat", "a.jpg"), 20, 20, 1, 2, 3, SKEncodedImageFormat.Jpeg);
        ShouldBeOneLine(FluentActions.Invoking(() => Open("flat")).Should().Throw<InvalidDataException>().Which, "no class sub-folders");

        Write(Path.Combine(Class("noimages", "a"), "a.png"), 20, 20, 1, 2, 3, SKEncodedImageFormat.Png);
        Directory.CreateDirectory(Class("noimages", "b"));
        File.WriteAllText(Path.Combine(Class("noimages", "b"), "readme.txt"), "");
        ShouldBeOneLine(FluentActions.Invoking(() => Open("noimages")).Should().Throw<InvalidDataException>().Which,
            $"'{Class("noimages", "b")}' holds no .jpg, .jpeg or .png images");

        Write(Path.Combine(Class("unreadable", "a"), "a.png"), 20, 20, 1, 2, 3, SKEncodedImageFormat.Png);
        Directory.CreateDirectory(Class("unreadable", "b"));
        File.WriteAllBytes(Path.Combine(Class("unreadable", "b"), "b.jpg"), [1, 2, 3, 4]);
        ShouldBeOneLine(FluentActions.Invoking(() => Open("unreadable")).Should().Throw<InvalidDataException>().Which,
            $"'{Class("unreadable", "b")}' has no readable images");

        Write(Path.Combine(Class("tiny", "a"), "tiny.png"), 4, 4, 1, 2, 3, SKEncodedImageFormat.Png);
        var tiny = Open("tiny");
        ShouldBeOneLine(FluentActions.Invoking(() => tiny.TryLoadImage(0, out _)).Should().Throw<InvalidDataException>().Which,
            "tiny.png' is 4×4 pixels, below the 8-pixel minimum side");

        ShouldBeOneLine(FluentActions.Invoking(() => Open("tiny", ["x"])).Should().Throw<InvalidDataException>().Which,
            "is not one of the 1 training classes");
    }

    [Fact]
    public void Datasets_open_reads_train_and_val_with_the_training_class_numbering()
    {
        Write(Path.Combine(_root, "imagenet", "train", "n1", "a.JPEG"), 20, 20, 1, 2, 3, SKEncodedImageFormat.Jpeg);
        Write(Path.Combine(_root, "imagenet", "train", "n2", "b.JPEG"), 20, 20, 1, 2, 3, SKEncodedImageFormat.Jpeg);
        Write(Path.Combine(_root, "imagenet", "val", "n2", "c.JPEG"), 20, 20, 1, 2, 3, SKEncodedImageFormat.Jpeg);
        var splits = Datasets.Open(Path.Combine(_root, "imagenet"), _warnings.Add);
        splits.Train.Count.Should().Be(2);
        splits.Validation.ClassNames.Should().Equal("n1", "n2");
        splits.Validation.Label(0).Should().Be(1, "val/n2 keeps the training label of n2");
        splits.Recipe.Should().Be(DataRecipe.ImageNet);

        Directory.CreateDirectory(Path.Combine(_root, "noval", "train"));
        ShouldBeOneLine(FluentActions.Invoking(() => Datasets.Open(Path.Combine(_root, "noval"))).Should().Throw<DirectoryNotFoundException>().Which,
            "has no val/ sub-folder");
    }
}
