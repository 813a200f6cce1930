namespace PolaFormer.Training.Data;

/// <summary>
/// A decoded 8-bit RGB image: <see cref="Pixels"/> holds the rows top to bottom, each pixel as three bytes R, G, B
/// (the layout of a PIL "RGB" image). Transforms never modify an image they are given; they return a new one.
/// </summary>
public sealed class RgbImage
{
    /// <summary>Wraps pixel bytes without copying them.</summary>
    /// <param name="width">Width in pixels, positive.</param>
    /// <param name="height">Height in pixels, positive.</param>
    /// <param name="pixels">width × height × 3 bytes, row-major R, G, B.</param>
    public RgbImage(int width, int height, byte[] pixels)
    {
        ArgumentNullException.ThrowIfNull(pixels);
        if (width <= 0) throw new ArgumentOutOfRangeException(nameof(width), width, "width must be positive.");
        if (height <= 0) throw new ArgumentOutOfRangeException(nameof(height), height, "height must be positive.");
        if (pixels.Length != (long)width * height * 3)
            throw new ArgumentException(
                $"pixels has {pixels.Length} bytes; a {width}×{height} RGB image needs {(long)width * height * 3}.", nameof(pixels));
        Width = width;
        Height = height;
        Pixels = pixels;
    }

    /// <summary>Decodes a JPEG or PNG file (alpha dropped, like PIL's <c>convert("RGB")</c>).</summary>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="InvalidDataException">The file is not a readable JPEG or PNG image.</exception>
    public static RgbImage Load(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"No image at '{path}'.", path);
        return ImageDecoder.TryDecode(path) ?? throw new InvalidDataException($"'{path}' is not a readable JPEG or PNG image.");
    }

    /// <summary>A new image filled with one colour.</summary>
    internal RgbImage(int width, int height, byte r, byte g, byte b)
        : this(width, height, new byte[width * height * 3])
    {
        for (int i = 0; i < Pixels.Length; i += 3)
        {
            Pixels[i] = r;
            Pixels[i + 1] = g;
            Pixels[i + 2] = b;
        }
    }

    /// <summary>Width in pixels.</summary>
    public int Width { get; }

    /// <summary>Height in pixels.</summary>
    public int Height { get; }

    /// <summary>Row-major R, G, B bytes, <see cref="Width"/> × <see cref="Height"/> × 3 of them.</summary>
    public byte[] Pixels { get; }

    /// <summary>The image as an 8-bit tensor (3, H, W), channels first — the input of
    /// <see cref="PolaFormer.Pretrained.ImagePreprocessor.Apply"/>.</summary>
    public TorchSharp.torch.Tensor ToTensor()
    {
        using var rows = TorchSharp.torch.tensor(Pixels, [Height, Width, 3], TorchSharp.torch.ScalarType.Byte);
        using var channelsFirst = rows.permute(2, 0, 1);
        return channelsFirst.contiguous();
    }

    internal RgbImage Clone() => new(Width, Height, (byte[])Pixels.Clone());

    internal static RgbImage Blank(int width, int height) => new(width, height, new byte[width * height * 3]);

    /// <summary>"W×H".</summary>
    public override string ToString() => $"{Width}×{Height}";
}
