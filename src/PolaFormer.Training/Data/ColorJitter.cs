namespace PolaFormer.Training.Data;

/// <summary>
/// torchvision's <c>ColorJitter(brightness=s, contrast=s, saturation=s)</c> as timm builds it from a scalar (no hue):
/// each factor uniform in [max(0, 1 − s), 1 + s], the three adjustments applied in a random order, with PIL's
/// <c>ImageEnhance</c> semantics.
/// </summary>
internal sealed class ColorJitter(double strength) : IImageTransform
{
    public RgbImage Apply(RgbImage image, SampleRng rng)
    {
        double lo = Math.Max(0, 1 - strength), hi = 1 + strength;
        // torchvision draws the order first (a permutation of brightness, contrast, saturation, hue), then the factors.
        var order = rng.Permutation(4);
        double brightness = rng.Uniform(lo, hi), contrast = rng.Uniform(lo, hi), saturation = rng.Uniform(lo, hi);
        foreach (int op in order)
        {
            image = op switch
            {
                0 => PixelOps.Brightness(image, brightness),
                1 => PixelOps.Contrast(image, contrast),
                2 => PixelOps.Color(image, saturation),
                _ => image, // hue is not jittered by a scalar colour-jitter setting
            };
        }
        return image;
    }

    public override string ToString() => FormattableString.Invariant($"ColorJitter(brightness={strength:0.###}, contrast={strength:0.###}, saturation={strength:0.###})");
}
