namespace PolaFormer.Training.Data;

/// <summary>torchvision's <c>RandomHorizontalFlip(p)</c>.</summary>
internal sealed class HorizontalFlip(double probability) : IImageTransform
{
    public RgbImage Apply(RgbImage image, SampleRng rng) => rng.Chance(probability) ? Mirror(image) : image;

    public static RgbImage Mirror(RgbImage image)
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

    public override string ToString() => FormattableString.Invariant($"RandomHorizontalFlip(p={probability:0.###})");
}
