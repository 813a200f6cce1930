namespace PolaFormer.Training.Data;

/// <summary>
/// torchvision's <c>ColorJitter(brightness=s, contrast=s, saturation=s)</c> as timm builds it from a scalar (no hue):
/// each factor uniform in [max(0, 1 − s), 1 + s], the three adjustments applied in a random order, with PIL's
/// <c>ImageEnhance</c> semantics.
/// </summary>
public sealed class ColorJitter : IImageTransform
{
    private readonly double strength;

    /// <summary>Creates the transform.</summary>
    /// <param name="strength">s: each factor is drawn from [max(0, 1 − s), 1 + s]; 0 or more.</param>
    /// <exception cref="ArgumentOutOfRangeException">strength is negative, infinite or NaN.</exception>
    public ColorJitter(double strength)
    {
        if (!(strength >= 0 && double.IsFinite(strength)))
            throw new ArgumentOutOfRangeException(nameof(strength), strength, $"strength is {strength}; expected a finite value of 0 or more.");
        this.strength = strength;
    }

    /// <inheritdoc />
    public RgbImage Apply(RgbImage image, SampleRng rng)
    {
        ArgumentNullException.ThrowIfNull(image);
        ArgumentNullException.ThrowIfNull(rng);
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

    /// <inheritdoc />
    public override string ToString() => FormattableString.Invariant($"ColorJitter(brightness={strength:0.###}, contrast={strength:0.###}, saturation={strength:0.###})");
}
