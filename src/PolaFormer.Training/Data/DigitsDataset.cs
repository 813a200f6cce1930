using System.Buffers.Binary;
using System.Diagnostics.CodeAnalysis;
using System.IO.Compression;
using System.Text;

namespace PolaFormer.Training.Data;

/// <summary>Which part of the bundled digits file to read.</summary>
public enum DigitsSplit
{
    /// <summary>The first <c>trainCount</c> records (8,000 in the bundled file).</summary>
    Train,

    /// <summary>The remaining records (2,000 in the bundled file).</summary>
    Test,
}

/// <summary>
/// The bundled handwritten digits (<c>samples/data/mnist-digits-10k.bin.gz</c>, format PFDIGITS v1, see
/// <c>samples/data/README.md</c>): 28×28 8-bit greyscale, ink 255 on background 0, classes "0" … "9". Each digit is
/// served as an RGB image with the grey value in all three channels, because the models take 3 input channels.
/// </summary>
public sealed class DigitsDataset : IImageDataset
{
    /// <summary>The bundled file's name.</summary>
    public const string FileName = "mnist-digits-10k.bin.gz";

    private static readonly string[] Digits = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

    private readonly byte[] _pixels; // this split's images, back to back
    private readonly byte[] _labels;
    private readonly string _path;
    private readonly int _firstRecord;

    private DigitsDataset(string path, DigitsSplit split, int firstRecord, int width, int height, byte[] labels, byte[] pixels)
    {
        _path = path;
        Split = split;
        _firstRecord = firstRecord;
        ImageWidth = width;
        ImageHeight = height;
        _labels = labels;
        _pixels = pixels;
    }

    /// <summary>Reads one split of a PFDIGITS file (gzip-compressed when the name ends in .gz). Throws a one-line
    /// <see cref="FileNotFoundException"/> or <see cref="InvalidDataException"/> naming the file and the fix.</summary>
    public static DigitsDataset Load(string path, DigitsSplit split)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        var full = Path.GetFullPath(path);
        if (!File.Exists(full))
            throw new FileNotFoundException(
                $"Digits file '{full}' does not exist; pass the path of {FileName} (it ships in samples/data/).", full);
        byte[] data;
        try
        {
            using var file = File.OpenRead(full);
            using Stream stream = full.EndsWith(".gz", StringComparison.OrdinalIgnoreCase) ? new GZipStream(file, CompressionMode.Decompress) : file;
            data = ReadLimited(stream, full);
        }
        catch (InvalidDataException e) when (!e.Message.StartsWith($"Digits file '{full}'", StringComparison.Ordinal)) // ReadLimited's own errors pass as they are
        {
            throw new InvalidDataException($"Digits file '{full}' is not valid gzip ({e.Message}); restore it from the repository's samples/data/.", e);
        }

        const int headerSize = 28;
        if (data.Length < headerSize || Encoding.ASCII.GetString(data, 0, 8) != "PFDIGITS")
            throw new InvalidDataException($"Digits file '{full}' does not start with the PFDIGITS magic; restore it from the repository's samples/data/.");
        uint version = BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan(8));
        uint count = BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan(12));
        uint height = BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan(16));
        uint width = BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan(20));
        uint trainCount = BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan(24));
        if (version != 1)
            throw new InvalidDataException($"Digits file '{full}' has format version {version}; this reader understands version 1.");
        long expected = headerSize + (long)count + (long)count * height * width;
        if (count == 0 || width == 0 || height == 0 || trainCount > count || data.Length != expected)
            throw new InvalidDataException(
                $"Digits file '{full}' is inconsistent (count {count}, {width}×{height}, train {trainCount}, {data.Length} bytes, expected {expected}); restore it from the repository's samples/data/.");

        int first = split == DigitsSplit.Train ? 0 : (int)trainCount;
        int n = split == DigitsSplit.Train ? (int)trainCount : (int)(count - trainCount);
        int imageBytes = (int)(width * height);
        var labels = data.AsSpan(headerSize + first, n).ToArray();
        for (int i = 0; i < n; i++)
            if (labels[i] > 9)
                throw new InvalidDataException($"Digits file '{full}' record {first + i} has label {labels[i]}; labels must be 0..9.");
        var pixels = data.AsSpan(headerSize + (int)count + first * imageBytes, n * imageBytes).ToArray();
        return new DigitsDataset(full, split, first, (int)width, (int)height, labels, pixels);
    }

    /// <summary>The most bytes a digits file may hold once decompressed (the bundled one holds 7.9 MB).</summary>
    public const long MaxBytes = 1L << 30;

    /// <summary>
    /// Reads the header, then exactly the bytes it declares, never more than <see cref="MaxBytes"/>: a small gzip
    /// file can inflate to gigabytes, so the size must be bounded before it is read, not after.
    /// </summary>
    private static byte[] ReadLimited(Stream stream, string full)
    {
        const int headerSize = 28;
        var header = new byte[headerSize];
        int got = stream.ReadAtLeast(header, headerSize, throwOnEndOfStream: false);
        if (got < headerSize || Encoding.ASCII.GetString(header, 0, 8) != "PFDIGITS")
            throw new InvalidDataException($"Digits file '{full}' does not start with the PFDIGITS magic; restore it from the repository's samples/data/.");
        long count = BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(12));
        long height = BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(16));
        long width = BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(20));
        long expected = headerSize + count + count * height * width;
        if (expected > MaxBytes)
            throw new InvalidDataException(string.Create(System.Globalization.CultureInfo.InvariantCulture,
                $"Digits file '{full}' declares {count} images of {width}×{height} ({expected:N0} bytes); expected at most {MaxBytes:N0} bytes. Restore it from the repository's samples/data/."));
        // One byte more than declared, so a file with trailing data is still reported as inconsistent below.
        var data = new byte[expected + 1];
        header.CopyTo(data, 0);
        int length = headerSize + stream.ReadAtLeast(data.AsSpan(headerSize), data.Length - headerSize, throwOnEndOfStream: false);
        if (length > expected)
            throw new InvalidDataException(string.Create(System.Globalization.CultureInfo.InvariantCulture,
                $"Digits file '{full}' holds more than the {expected:N0} bytes its header declares ({count} images of {width}×{height}); restore it from the repository's samples/data/."));
        return data.AsSpan(0, length).ToArray();
    }

    /// <summary>
    /// Finds the bundled file: next to the application (<c>./</c>, <c>data/</c>), else in <c>samples/data/</c> of
    /// the application folder or any folder above it (so it works from a repository checkout). Null when absent.
    /// </summary>
    public static string? FindBundled()
    {
        var start = new DirectoryInfo(AppContext.BaseDirectory);
        foreach (var candidate in new[] { FileName, Path.Combine("data", FileName) })
        {
            var path = Path.Combine(start.FullName, candidate);
            if (File.Exists(path)) return path;
        }
        for (var dir = start; dir is not null; dir = dir.Parent)
        {
            var path = Path.Combine(dir.FullName, "samples", "data", FileName);
            if (File.Exists(path)) return path;
        }
        return null;
    }

    /// <summary>The split this dataset holds.</summary>
    public DigitsSplit Split { get; }

    /// <summary>Width of every digit in pixels (28).</summary>
    public int ImageWidth { get; }

    /// <summary>Height of every digit in pixels (28).</summary>
    public int ImageHeight { get; }

    /// <inheritdoc/>
    public int Count => _labels.Length;

    /// <inheritdoc/>
    public IReadOnlyList<string> ClassNames => Digits;

    /// <inheritdoc/>
    public int Label(int index) => _labels[index];

    /// <inheritdoc/>
    public string Source(int index) => $"{_path} record {_firstRecord + index}";

    /// <summary>The digit's grey values (row-major, 0 background … 255 ink), without copying.</summary>
    internal ReadOnlySpan<byte> Grey(int index) => _pixels.AsSpan(index * ImageWidth * ImageHeight, ImageWidth * ImageHeight);

    /// <inheritdoc/>
    public bool TryLoadImage(int index, [NotNullWhen(true)] out RgbImage? image)
    {
        var grey = Grey(index);
        var rgb = new byte[grey.Length * 3];
        for (int i = 0; i < grey.Length; i++) rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = grey[i];
        image = new RgbImage(ImageWidth, ImageHeight, rgb);
        return true;
    }
}
