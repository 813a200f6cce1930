namespace PolaFormer.Training.Data;

/// <summary>
/// torchvision's/timm's <c>RandomResizedCrop</c>: up to 10 tries of an area fraction uniform in
/// <see cref="Scale"/> and an aspect ratio log-uniform in <see cref="Ratio"/> (rounded to whole pixels with Python's
/// round-half-to-even); a try fits when 0 &lt; w ≤ width and 0 &lt; h ≤ height, and its position is uniform. If none
/// fits, the centre crop with the ratio clamped into range. The crop is then resized to Size × Size.
/// </summary>
public sealed class RandomResizedCrop : IImageTransform
{
    private readonly Interpolation interpolation;

    /// <summary>Creates the transform.</summary>
    /// <param name="size">Side of the square output in pixels, 1 or more.</param>
    /// <param name="scale">Range of the crop's area as a fraction of the image's, 0 &lt; Min ≤ Max ≤ 1 (timm: (0.08, 1)).</param>
    /// <param name="ratio">Range of the crop's aspect ratio w / h, 0 &lt; Min ≤ Max (timm: (3/4, 4/3)).</param>
    /// <param name="interpolation">How the crop is resized.</param>
    /// <exception cref="ArgumentOutOfRangeException">A value is outside the range given above.</exception>
    public RandomResizedCrop(int size, (double Min, double Max) scale, (double Min, double Max) ratio, Interpolation interpolation)
    {
        if (size < 1) throw new ArgumentOutOfRangeException(nameof(size), size, $"size is {size}; expected 1 or more pixels.");
        if (!(scale.Min > 0 && scale.Min <= scale.Max && scale.Max <= 1))
            throw new ArgumentOutOfRangeException(nameof(scale), scale, $"scale is ({scale.Min}, {scale.Max}); expected 0 < Min ≤ Max ≤ 1 (fractions of the image's area).");
        if (!(ratio.Min > 0 && ratio.Min <= ratio.Max && double.IsFinite(ratio.Max)))
            throw new ArgumentOutOfRangeException(nameof(ratio), ratio, $"ratio is ({ratio.Min}, {ratio.Max}); expected finite 0 < Min ≤ Max (aspect ratios w / h).");
        if (!Enum.IsDefined(interpolation))
            throw new ArgumentOutOfRangeException(nameof(interpolation), interpolation, $"interpolation is {(int)interpolation}; expected one of {string.Join(", ", Enum.GetNames<Interpolation>())}.");
        Size = size;
        Scale = scale;
        Ratio = ratio;
        this.interpolation = interpolation;
    }

    /// <summary>Side of the square output in pixels.</summary>
    public int Size { get; }

    /// <summary>Range of the crop's area as a fraction of the image's.</summary>
    public (double Min, double Max) Scale { get; }

    /// <summary>Range of the crop's aspect ratio w / h.</summary>
    public (double Min, double Max) Ratio { get; }

    /// <inheritdoc />
    public RgbImage Apply(RgbImage image, SampleRng rng)
    {
        ArgumentNullException.ThrowIfNull(image);
        ArgumentNullException.ThrowIfNull(rng);
        var (left, top, w, h) = SampleBox(image.Width, image.Height, rng);
        return Resampler.ResizeRegion(image, left, top, w, h, Size, Size, interpolation);
    }

    /// <summary>The crop box (left, top, width, height) for an image of the given size.</summary>
    internal (int Left, int Top, int Width, int Height) SampleBox(int width, int height, SampleRng rng)
    {
        double area = (double)width * height;
        double logMin = Math.Log(Ratio.Min), logMax = Math.Log(Ratio.Max);
        for (int attempt = 0; attempt < 10; attempt++)
        {
            double targetArea = rng.Uniform(Scale.Min, Scale.Max) * area;
            double aspect = Math.Exp(rng.Uniform(logMin, logMax));
            int w = (int)Math.Round(Math.Sqrt(targetArea * aspect));
            int h = (int)Math.Round(Math.Sqrt(targetArea / aspect));
            if (0 < w && w <= width && 0 < h && h <= height)
            {
                int top = rng.Integer(0, height - h);
                int left = rng.Integer(0, width - w);
                return (left, top, w, h);
            }
        }
        return CentreFallback(width, height);
    }

    /// <summary>torchvision's fallback: the whole image if its ratio is in range, else the largest centred crop with
    /// the nearest allowed ratio.</summary>
    internal (int Left, int Top, int Width, int Height) CentreFallback(int width, int height)
    {
        double inRatio = (double)width / height;
        int w, h;
        if (inRatio < Ratio.Min)
        {
            w = width;
            h = (int)Math.Round(w / Ratio.Min);
        }
        else if (inRatio > Ratio.Max)
        {
            h = height;
            w = (int)Math.Round(h * Ratio.Max);
        }
        else
        {
            w = width;
            h = height;
        }
        return ((width - w) / 2, (height - h) / 2, w, h);
    }

    /// <inheritdoc />
    public override string ToString() =>
        FormattableString.Invariant($"RandomResizedCrop({Size}, scale=({Scale.Min:0.###}, {Scale.Max:0.###}), ratio=({Ratio.Min:0.###}, {Ratio.Max:0.###}), {interpolation.ToString().ToLowerInvariant()})");
}
