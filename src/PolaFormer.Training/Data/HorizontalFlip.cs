namespace PolaFormer.Training.Data;

/// <summary>torchvision's <c>RandomHorizontalFlip(p)</c>: mirrors the image left to right with probability p.</summary>
public sealed class HorizontalFlip : IImageTransform
{
    private readonly double _probability;

    /// <summary>Creates the transform.</summary>
    /// <param name="probability">Probability of mirroring an image, in [0, 1].</param>
    /// <exception cref="ArgumentOutOfRangeException">probability is outside [0, 1] or NaN.</exception>
    public HorizontalFlip(double probability)
    {
        if (!(probability is >= 0 and <= 1))
            throw new ArgumentOutOfRangeException(nameof(probability), probability, $"probability is {probability}; expected a value in [0, 1].");
        _probability = probability;
    }

    /// <inheritdoc />
    public RgbImage Apply(RgbImage image, SampleRng rng)
    {
        ArgumentNullException.ThrowIfNull(image);
        ArgumentNullException.ThrowIfNull(rng);
        return rng.Chance(_probability) ? Mirror(image) : image;
    }

    internal static RgbImage Mirror(RgbImage image)
    {
        int w = image.Width;
        var src = image.Pixels;
        var dst = new byte[src.Length];
        for (int y = 0; y < image.Height; y++)
        {
            int row = y * w * 3;
            for (int x = 0; x < w; x++)
            {
                int s = row + x * 3, d = row + (w - 1 - x) * 3;
                dst[d] = src[s];
                dst[d + 1] = src[s + 1];
                dst[d + 2] = src[s + 2];
            }
        }
        return new RgbImage(w, image.Height, dst);
    }

    /// <inheritdoc />
    public override string ToString() => FormattableString.Invariant($"RandomHorizontalFlip(p={_probability:0.###})");
}
