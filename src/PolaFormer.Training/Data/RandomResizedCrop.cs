namespace PolaFormer.Training.Data;

/// <summary>
/// torchvision's/timm's <c>RandomResizedCrop</c>: up to 10 tries of an area fraction uniform in
/// <see cref="Scale"/> and an aspect ratio log-uniform in <see cref="Ratio"/> (rounded to whole pixels with Python's
/// round-half-to-even); a try fits when 0 &lt; w ≤ width and 0 &lt; h ≤ height, and its position is uniform. If none
/// fits, the centre crop with the ratio clamped into range. The crop is then resized to Size × Size.
/// </summary>
internal sealed class RandomResizedCrop(int size, (double Min, double Max) scale, (double Min, double Max) ratio, Interpolation interpolation)
    : IImageTransform
{
    public int Size { get; } = size;
    public (double Min, double Max) Scale { get; } = scale;
    public (double Min, double Max) Ratio { get; } = ratio;

    public RgbImage Apply(RgbImage image, SampleRng rng)
    {
        var (left, top, w, h) = SampleBox(image.Width, image.Height, rng);
        return Resampler.ResizeRegion(image, left, top, w, h, Size, Size, interpolation);
    }

    /// <summary>The crop box (left, top, width, height) for an image of the given size.</summary>
    public (int Left, int Top, int Width, int Height) SampleBox(int width, int height, SampleRng rng)
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
    public (int Left, int Top, int Width, int Height) CentreFallback(int width, int height)
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

    public override string ToString() =>
        FormattableString.Invariant($"RandomResizedCrop({Size}, scale=({Scale.Min:0.###}, {Scale.Max:0.###}), ratio=({Ratio.Min:0.###}, {Ratio.Max:0.###}), {interpolation.ToString().ToLowerInvariant()})");
}
