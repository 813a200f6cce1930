using System.Diagnostics.CodeAnalysis;

namespace PolaFormer.Training.Data;

/// <summary>
/// A labelled image collection the <see cref="BatchLoader"/> reads from worker threads: every member must be
/// thread-safe, and <see cref="TryLoadImage"/> must return a fresh image each call (pipelines never modify it, but
/// callers may).
/// </summary>
public interface IImageDataset
{
    /// <summary>Number of samples.</summary>
    int Count { get; }

    /// <summary>Class names; label <c>k</c> is <c>ClassNames[k]</c>.</summary>
    IReadOnlyList<string> ClassNames { get; }

    /// <summary>Label of sample <paramref name="index"/>, in [0, <see cref="ClassNames"/>.Count).</summary>
    int Label(int index);

    /// <summary>Decodes sample <paramref name="index"/>. Returns false for an unreadable image, which the dataset has
    /// already reported (once) and counted; the loader then substitutes another sample. Throws for problems the user
    /// must fix (e.g. an image too small to use).</summary>
    bool TryLoadImage(int index, [NotNullWhen(true)] out RgbImage? image);

    /// <summary>Where sample <paramref name="index"/> comes from (a file path, or a record number), for messages.</summary>
    string Source(int index);
}
