using PolaFormer.Pretrained;
namespace PolaFormer.Training.Data;

/// <summary>The evaluation transform: resize (see <see cref="ResizeMode"/>) to <see cref="ResizeTo"/>, then
/// torchvision's <c>CenterCrop(Size)</c> (offsets round((in − out) / 2), half to even).</summary>
public sealed class ResizeCenterCrop : IImageTransform
{
    private readonly ResizeMode mode;
    private readonly Interpolation interpolation;

    /// <summary>Creates the transform.</summary>
    /// <param name="size">Side of the square centre crop in pixels, 1 or more.</param>
    /// <param name="resizeTo">The resize target (the shorter side, or both sides with <see cref="ResizeMode.Squash"/>),
    /// at least <paramref name="size"/>.</param>
    /// <param name="mode">How the image is resized before the crop.</param>
    /// <param name="interpolation">How the image is resized.</param>
    /// <exception cref="ArgumentOutOfRangeException">A value is outside the range given above.</exception>
    public ResizeCenterCrop(int size, int resizeTo, ResizeMode mode, Interpolation interpolation)
    {
        if (size < 1) throw new ArgumentOutOfRangeException(nameof(size), size, $"size is {size}; expected 1 or more pixels.");
        if (resizeTo < size)
            throw new ArgumentOutOfRangeException(nameof(resizeTo), resizeTo, $"resizeTo is {resizeTo}; expected at least the crop size {size}.");
        if (!Enum.IsDefined(mode))
            throw new ArgumentOutOfRangeException(nameof(mode), mode, $"mode is {(int)mode}; expected one of {string.Join(", ", Enum.GetNames<ResizeMode>())}.");
        if (!Enum.IsDefined(interpolation))
            throw new ArgumentOutOfRangeException(nameof(interpolation), interpolation, $"interpolation is {(int)interpolation}; expected one of {string.Join(", ", Enum.GetNames<Interpolation>())}.");
        Size = size;
        ResizeTo = resizeTo;
        this.mode = mode;
        this.interpolation = interpolation;
    }

    /// <summary>Side of the square centre crop in pixels.</summary>
    public int Size { get; }

    /// <summary>The resize target before the crop.</summary>
    public int ResizeTo { get; }

    /// <inheritdoc />
    public RgbImage Apply(RgbImage image, SampleRng rng) => Apply(image);

    /// <summary>The transform (it draws no randomness).</summary>
    public RgbImage Apply(RgbImage image)
    {
        ArgumentNullException.ThrowIfNull(image);
        var (w, h) = ResizedSize(image.Width, image.Height);
        var resized = w == image.Width && h == image.Height ? image : Resampler.Resize(image, w, h, interpolation);
        if (w < Size || h < Size)
            throw new InvalidOperationException(
                $"Resizing {image.Width}×{image.Height} to {w}×{h} leaves less than the {Size}×{Size} centre crop; use a crop fraction ≤ 1.");
        int left = (int)Math.Round((w - Size) / 2.0), top = (int)Math.Round((h - Size) / 2.0);
        return Resampler.Crop(resized, left, top, Size, Size);
    }

    internal (int Width, int Height) ResizedSize(int width, int height)
    {
        if (mode == ResizeMode.Squash) return (ResizeTo, ResizeTo);
        if (width <= height) return (ResizeTo, (int)((long)ResizeTo * height / width));
        return ((int)((long)ResizeTo * width / height), ResizeTo);
    }

    /// <inheritdoc />
    public override string ToString() =>
        FormattableString.Invariant($"Resize({(mode == ResizeMode.Squash ? $"({ResizeTo}, {ResizeTo})" : ResizeTo.ToString())}, {interpolation.ToString().ToLowerInvariant()}) + CenterCrop({Size})");
}
