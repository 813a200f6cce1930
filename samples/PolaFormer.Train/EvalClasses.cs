using System.Diagnostics.CodeAnalysis;
using PolaFormer.Training.Data;

/// <summary>Matches a checkpoint's classifier to the classes of the dataset it is evaluated on, so a mismatch is an
/// error rather than a meaningless accuracy.</summary>
internal static class EvalClasses
{
    /// <summary>The dataset to evaluate: <paramref name="data"/> itself when the head has its class count (and, where
    /// the checkpoint records its class names, the same names in the same order); its images relabelled with the
    /// checkpoint's numbering when its classes are a subset of the recorded ones by name (said through
    /// <paramref name="note"/>). Otherwise throws naming both class counts.</summary>
    public static IImageDataset Match(string path, long headClasses, IReadOnlyList<string>? recordedClasses, IImageDataset data,
        string description, Action<string> note)
    {
        var names = data.ClassNames;
        if (recordedClasses is { } recorded && recorded.Count == headClasses)
        {
            if (recorded.SequenceEqual(names, StringComparer.Ordinal)) return data;
            var index = recorded.Select((name, i) => (name, i)).ToDictionary(p => p.name, p => p.i, StringComparer.Ordinal);
            var missing = names.Where(n => !index.ContainsKey(n)).ToList();
            if (missing.Count == 0)
            {
                note($"classes: the dataset's {names.Count} classes are {(names.Count == recorded.Count ? "the checkpoint's, in another order" : $"a subset of the checkpoint's {recorded.Count} by name")}; its labels are mapped to the checkpoint's numbering");
                return new Relabelled(data, recorded, names.Select(n => index[n]).ToArray());
            }
            throw new InvalidDataException(
                $"Checkpoint '{path}' classifies {recorded.Count} classes ({Sample(recorded)}) but {description} has {names.Count} ({Sample(names)}), {missing.Count} of them not among the checkpoint's ({Sample(missing)}); expected a dataset with the checkpoint's classes, or a model fine-tuned on these.");
        }
        if (headClasses != names.Count)
            throw new InvalidDataException(
                $"Checkpoint '{path}' has a {headClasses}-class head but {description} has {names.Count} ({Sample(names)}); expected a dataset with the checkpoint's {headClasses} classes, or a model fine-tuned on these {names.Count} (train --pretrained).");
        return data;
    }

    private static string Sample(IReadOnlyList<string> names) =>
        string.Join(", ", names.Take(5)) + (names.Count > 5 ? $", … {names.Count - 5} more" : "");

    /// <summary>The images of another dataset with labels in the checkpoint's numbering.</summary>
    private sealed class Relabelled(IImageDataset inner, IReadOnlyList<string> classNames, int[] map) : IImageDataset
    {
        public int Count => inner.Count;
        public IReadOnlyList<string> ClassNames => classNames;
        public int Label(int index) => map[inner.Label(index)];
        public bool TryLoadImage(int index, [NotNullWhen(true)] out RgbImage? image) => inner.TryLoadImage(index, out image);
        public string Source(int index) => inner.Source(index);
    }
}
