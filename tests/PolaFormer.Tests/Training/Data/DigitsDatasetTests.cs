using FluentAssertions;
using PolaFormer.Training.Data;
using Xunit;

namespace PolaFormer.Tests.Training.Data;

public sealed class DigitsDatasetTests
{
    private static readonly string File = Path.Combine(AppContext.BaseDirectory, "data", DigitsDataset.FileName);

    [Fact]
    public void The_bundled_file_has_8000_train_and_2000_test_digits_with_the_readme_counts()
    {
        var train = DigitsDataset.Load(File, DigitsSplit.Train);
        var test = DigitsDataset.Load(File, DigitsSplit.Test);
        train.Count.Should().Be(8000);
        test.Count.Should().Be(2000);
        (train.ImageWidth, train.ImageHeight).Should().Be((28, 28));
        train.ClassNames.Should().Equal("0", "1", "2", "3", "4", "5", "6", "7", "8", "9");
        int[] Counts(DigitsDataset d) => Enumerable.Range(0, 10).Select(c => Enumerable.Range(0, d.Count).Count(i => d.Label(i) == c)).ToArray();
        Counts(train).Should().Equal(801, 902, 793, 826, 784, 690, 811, 856, 755, 782);
        Counts(test).Should().Equal(200, 225, 198, 206, 196, 173, 203, 214, 189, 196);

        int min = 255, max = 0;
        for (int i = 0; i < train.Count; i += 37)
        {
            var grey = train.Grey(i);
            foreach (var v in grey)
            {
                min = Math.Min(min, v);
                max = Math.Max(max, v);
            }
            grey[0].Should().Be(0, "the corner is background");
        }
        (min, max).Should().Be((0, 255));

        train.TryLoadImage(5, out var image).Should().BeTrue();
        for (int i = 0; i < image!.Pixels.Length; i += 3)
        {
            image.Pixels[i].Should().Be(image.Pixels[i + 1]);
            image.Pixels[i].Should().Be(image.Pixels[i + 2]);
        }
    }

    [Fact]
    public void No_path_opens_the_bundled_digits_with_the_digits_recipe()
    {
        var splits = Datasets.Open(null);
        splits.Train.Should().BeOfType<DigitsDataset>().Which.Count.Should().Be(8000);
        splits.Validation.Count.Should().Be(2000);
        splits.Recipe.Should().Be(DataRecipe.Digits);
        var output = ImagePipeline.Train(splits.Recipe).Process(((DigitsDataset)splits.Train).TryLoadImage(0, out var digit) ? digit : null!);
        output.Should().HaveCount(3 * 32 * 32);
    }

    [Fact]
    public void A_damaged_file_fails_with_one_line_naming_it()
    {
        var path = Path.Combine(Path.GetTempPath(), "polaformer-bad-digits-" + Guid.NewGuid().ToString("N") + ".bin");
        System.IO.File.WriteAllBytes(path, "NOTDIGITS-and-more-bytes-here-xx"u8.ToArray());
        try
        {
            FluentActions.Invoking(() => DigitsDataset.Load(path, DigitsSplit.Train))
                .Should().Throw<InvalidDataException>().WithMessage($"*'{path}' does not start with the PFDIGITS magic*");
            FluentActions.Invoking(() => DigitsDataset.Load(path + ".missing", DigitsSplit.Train))
                .Should().Throw<FileNotFoundException>().WithMessage("*does not exist*");
        }
        finally
        {
            System.IO.File.Delete(path);
        }
    }
}
