namespace PolaFormer.Training.Data;

/// <summary>A training set, its validation set (same classes, same labels) and the recipe that suits them.</summary>
/// <param name="Train">The training images.</param>
/// <param name="Validation">The validation images.</param>
/// <param name="Recipe">The recipe for this kind of data (<see cref="DataRecipe.ImageNet"/> for image folders,
/// <see cref="DataRecipe.Digits"/> for the bundled digits).</param>
/// <param name="Description">What was opened, for logs.</param>
public sealed record DatasetSplits(IImageDataset Train, IImageDataset Validation, DataRecipe Recipe, string Description)
{
    /// <summary>What <see cref="Validation"/> is, for reports: "validation" for a folder's val/ split, "test" for the
    /// bundled digits, whose held-out split is their test set.</summary>
    public string ValidationSplitName { get; init; } = "validation";
}

/// <summary>Opens the data a training run names.</summary>
public static class Datasets
{
    /// <summary>
    /// With no path (or "digits"): the bundled 10,000 MNIST digits (8,000 train / 2,000 test, see
    /// <see cref="DigitsDataset"/>). Otherwise a folder in ImageNet's layout: <c>train/&lt;class&gt;/*</c> and
    /// <c>val/&lt;class&gt;/*</c>; validation uses the training classes' numbering. Errors are one line naming the path
    /// and what to fix.
    /// </summary>
    /// <param name="path">Dataset root, "digits", or null.</param>
    /// <param name="warn">Receives one line per unreadable image; null writes to standard error.</param>
    public static DatasetSplits Open(string? path, Action<string>? warn = null)
    {
        if (string.IsNullOrWhiteSpace(path) || path.Equals("digits", StringComparison.OrdinalIgnoreCase))
        {
            var file = DigitsDataset.FindBundled()
                ?? throw new FileNotFoundException(
                    $"The bundled digits ({DigitsDataset.FileName}) were not found next to the program or in a samples/data folder above it; pass a dataset folder, or copy samples/data/{DigitsDataset.FileName} next to the program.");
            return OpenDigits(file);
        }

        if (File.Exists(path) && path.EndsWith(".gz", StringComparison.OrdinalIgnoreCase)) return OpenDigits(path);

        var root = Path.GetFullPath(path);
        if (!Directory.Exists(root))
            throw new DirectoryNotFoundException($"Dataset folder '{root}' does not exist; pass a folder with train/ and val/ sub-folders (ImageNet layout), or no path for the bundled digits.");
        var trainDir = Path.Combine(root, "train");
        var valDir = Path.Combine(root, "val");
        if (!Directory.Exists(trainDir))
            throw new DirectoryNotFoundException($"Dataset folder '{root}' has no train/ sub-folder; it needs train/<class>/*.jpg and val/<class>/*.jpg (ImageNet layout).");
        if (!Directory.Exists(valDir))
            throw new DirectoryNotFoundException($"Dataset folder '{root}' has no val/ sub-folder; it needs train/<class>/*.jpg and val/<class>/*.jpg (ImageNet layout).");
        var train = ImageFolderDataset.Open(trainDir, warn: warn);
        var val = ImageFolderDataset.Open(valDir, train.ClassNames, warn: warn);
        return new DatasetSplits(train, val, DataRecipe.ImageNet,
            $"image folders '{root}': {train.Count} train / {val.Count} val images, {train.ClassNames.Count} classes");
    }

    private static DatasetSplits OpenDigits(string file)
    {
        var train = DigitsDataset.Load(file, DigitsSplit.Train);
        var test = DigitsDataset.Load(file, DigitsSplit.Test);
        return new DatasetSplits(train, test, DataRecipe.Digits,
            $"digits '{Path.GetFullPath(file)}': {train.Count} train / {test.Count} test images, 10 classes")
        {
            ValidationSplitName = "test",
        };
    }
}
