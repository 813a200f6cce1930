using System.Collections.Concurrent;
using System.Diagnostics.CodeAnalysis;

namespace PolaFormer.Training.Data;

/// <summary>
/// torchvision's <c>ImageFolder</c>: <c>root/&lt;class&gt;/**/*.jpg|jpeg|png</c> (extensions case-insensitive, so
/// ImageNet's <c>.JPEG</c> counts), classes sorted by ordinal name comparison (Python's <c>sorted</c>) and numbered
/// from 0, files sorted by folder then name. Images are decoded on demand (SkiaSharp) as 8-bit RGB.
/// <para>Unreadable images: when a file does not decode it is reported once through the warning callback, counted in
/// <see cref="SkippedImages"/>, remembered, and <see cref="TryLoadImage"/> returns false for it from then on; the
/// <see cref="BatchLoader"/> substitutes the next readable sample (deterministically). Opening checks each class
/// folder's files only until one header reads, so it stays fast on ImageNet.</para>
/// </summary>
public sealed class ImageFolderDataset : IImageDataset
{
    /// <summary>File extensions that count as images (compared case-insensitively).</summary>
    public static IReadOnlyList<string> Extensions { get; } = [".jpg", ".jpeg", ".png"];

    private readonly string[] _paths;
    private readonly int[] _labels;
    private readonly string[] _classNames;
    private readonly int _minImageSide;
    private readonly Action<string> _warn;
    private readonly ConcurrentDictionary<int, bool> _unreadable = new();

    private ImageFolderDataset(string root, string[] classNames, string[] paths, int[] labels, int minImageSide, Action<string> warn)
    {
        Root = root;
        _classNames = classNames;
        _paths = paths;
        _labels = labels;
        _minImageSide = minImageSide;
        _warn = warn;
    }

    /// <summary>
    /// Lists <paramref name="root"/>. Throws a one-line <see cref="DirectoryNotFoundException"/> or
    /// <see cref="InvalidDataException"/> naming the path and the fix when the folder is missing, holds no class
    /// folders, a class folder holds no images, none of a class folder's images can be read, or (with
    /// <paramref name="classNames"/>) a folder is not one of the given classes.
    /// </summary>
    /// <param name="root">The folder holding one sub-folder per class.</param>
    /// <param name="classNames">The class list to label with (e.g. the training set's, for the validation set); a
    /// class may lack a folder. Null: the sorted sub-folder names.</param>
    /// <param name="minImageSide">Images with a side shorter than this many pixels are rejected when loaded (an error
    /// naming the file), since a crop of them is mostly interpolation.</param>
    /// <param name="warn">Receives one line per unreadable image; null writes to standard error.</param>
    public static ImageFolderDataset Open(string root, IReadOnlyList<string>? classNames = null, int minImageSide = 8,
        Action<string>? warn = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(root);
        if (minImageSide < 1) throw new ArgumentOutOfRangeException(nameof(minImageSide), minImageSide, "minImageSide must be at least 1.");
        warn ??= message => Console.Error.WriteLine(message);
        var full = Path.GetFullPath(root);
        if (!Directory.Exists(full))
            throw new DirectoryNotFoundException(
                $"Image folder '{full}' does not exist; pass a folder that holds one sub-folder of images per class (<class>/*.jpg).");

        var folders = Directory.GetDirectories(full).Select(Path.GetFileName).OfType<string>()
            .Where(name => !name.StartsWith('.')).Order(StringComparer.Ordinal).ToArray();
        if (folders.Length == 0)
        {
            bool loose = Directory.EnumerateFiles(full).Any(IsImageFile);
            throw new InvalidDataException(loose
                ? $"Image folder '{full}' holds images but no class sub-folders; move each class's images into its own sub-folder (<class>/*.jpg), e.g. sort ImageNet's flat val/ by the devkit labels."
                : $"Image folder '{full}' is empty; it needs one sub-folder of .jpg/.jpeg/.png images per class.");
        }

        var names = classNames?.ToArray() ?? folders;
        var labelOf = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < names.Length; i++) labelOf[names[i]] = i;

        var paths = new List<string>();
        var labels = new List<int>();
        var unreadable = new List<int>();
        foreach (var folder in folders)
        {
            var dir = Path.Combine(full, folder);
            if (!labelOf.TryGetValue(folder, out int label))
                throw new InvalidDataException(
                    $"Class folder '{dir}' is not one of the {names.Length} training classes; remove it or add the class to the training set.");
            var files = ListFiles(dir, warn)
                .Where(IsImageFile)
                .OrderBy(f => Path.GetDirectoryName(f), StringComparer.Ordinal)
                .ThenBy(Path.GetFileName, StringComparer.Ordinal)
                .ToArray();
            if (files.Length == 0)
                throw new InvalidDataException(
                    $"Class folder '{dir}' holds no .jpg, .jpeg or .png images; add images to it or remove the folder.");
            int firstReadable = Array.FindIndex(files, f => ImageDecoder.TryReadSize(f, out _, out _));
            if (firstReadable < 0)
                throw new InvalidDataException(
                    $"Class folder '{dir}' has no readable images (none of its {files.Length} files decodes as JPEG or PNG); replace the files or remove the folder.");
            unreadable.AddRange(Enumerable.Range(paths.Count, firstReadable));
            paths.AddRange(files);
            labels.AddRange(Enumerable.Repeat(label, files.Length));
        }

        var dataset = new ImageFolderDataset(full, names, [.. paths], [.. labels], minImageSide, warn);
        // Files that failed the header probe are reported now; the rest are checked when first loaded.
        foreach (int index in unreadable) dataset.MarkUnreadable(index);
        return dataset;
    }

    /// <summary>The folder's full path.</summary>
    public string Root { get; }

    /// <inheritdoc/>
    public int Count => _paths.Length;

    /// <inheritdoc/>
    public IReadOnlyList<string> ClassNames => _classNames;

    /// <summary>Number of distinct files found unreadable so far (each reported once).</summary>
    public int SkippedImages => _unreadable.Count;

    /// <inheritdoc/>
    public int Label(int index) => _labels[index];

    /// <inheritdoc/>
    public string Source(int index) => _paths[index];

    /// <inheritdoc/>
    public bool TryLoadImage(int index, [NotNullWhen(true)] out RgbImage? image)
    {
        image = null;
        if (_unreadable.ContainsKey(index)) return false;
        image = ImageDecoder.TryDecode(_paths[index]);
        if (image is null)
        {
            MarkUnreadable(index);
            return false;
        }
        if (image.Width < _minImageSide || image.Height < _minImageSide)
            throw new InvalidDataException(
                $"Image '{_paths[index]}' is {image.Width}×{image.Height} pixels, below the {_minImageSide}-pixel minimum side; remove or replace it (or lower minImageSide).");
        return true;
    }

    private void MarkUnreadable(int index)
    {
        if (_unreadable.TryAdd(index, true))
            _warn($"warning: skipping unreadable image '{_paths[index]}' (not a decodable JPEG/PNG); {_unreadable.Count} skipped so far.");
    }

    /// <summary>
    /// The files under <paramref name="classDir"/>, recursively, hidden ones skipped. Symbolic links to folders are
    /// followed once: a link back to the folder itself or one above it (a loop, which would list the same images
    /// again and again, and those of other classes under this class) or to a folder already listed is skipped with
    /// a warning naming it.
    /// </summary>
    private static List<string> ListFiles(string classDir, Action<string> warn)
    {
        var files = new List<string>();
        var listed = new HashSet<string>(StringComparer.Ordinal);
        var pending = new Stack<(string Path, string Real, string[] Chain)>();
        string rootReal = RealPath(classDir, classDir);
        pending.Push((classDir, rootReal, [rootReal, Path.GetFullPath(classDir)]));
        var options = new EnumerationOptions { AttributesToSkip = FileAttributes.Hidden, IgnoreInaccessible = false };
        while (pending.Count > 0)
        {
            var (dir, real, chain) = pending.Pop();
            if (!listed.Add(real)) continue;
            files.AddRange(Directory.EnumerateFiles(dir, "*", options));
            foreach (var sub in Directory.EnumerateDirectories(dir, "*", options))
            {
                var subReal = RealPath(sub, Path.Combine(real, Path.GetFileName(sub)));
                string? loop = chain.FirstOrDefault(ancestor => IsSameOrBelow(subReal, ancestor));
                if (loop is not null)
                {
                    warn($"warning: skipping '{sub}': a symbolic link to '{subReal}', a folder above it (a loop); its images are listed once already.");
                    continue;
                }
                if (listed.Contains(subReal))
                {
                    warn($"warning: skipping '{sub}': a symbolic link to '{subReal}', which is listed already.");
                    continue;
                }
                pending.Push((sub, subReal, [.. chain, subReal]));
            }
        }
        return files;
    }

    /// <summary>A folder's target when it is a symbolic link, else <paramref name="realIfNotLink"/>.</summary>
    private static string RealPath(string dir, string realIfNotLink)
    {
        var info = new DirectoryInfo(dir);
        if (info.LinkTarget is null) return Path.TrimEndingDirectorySeparator(Path.GetFullPath(realIfNotLink));
        var target = info.ResolveLinkTarget(returnFinalTarget: true);
        return Path.TrimEndingDirectorySeparator(Path.GetFullPath(target?.FullName ?? realIfNotLink));
    }

    private static bool IsSameOrBelow(string ancestor, string path) =>
        path.Equals(ancestor, StringComparison.Ordinal)
        || path.StartsWith(Path.TrimEndingDirectorySeparator(ancestor) + Path.DirectorySeparatorChar, StringComparison.Ordinal);

    private static bool IsImageFile(string path)
    {
        var extension = Path.GetExtension(path);
        foreach (var e in Extensions)
            if (string.Equals(extension, e, StringComparison.OrdinalIgnoreCase)) return true;
        return false;
    }
}
