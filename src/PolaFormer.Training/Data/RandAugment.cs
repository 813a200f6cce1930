using System.Globalization;
using System.Text.RegularExpressions;

namespace PolaFormer.Training.Data;

/// <summary>The operations of timm's RandAugment. The "Increasing" variants get stronger as the magnitude grows.</summary>
internal enum AugmentOp
{
    AutoContrast,
    Equalize,
    Invert,
    Rotate,
    Posterize,
    PosterizeIncreasing,
    Solarize,
    SolarizeIncreasing,
    SolarizeAdd,
    Color,
    ColorIncreasing,
    Contrast,
    ContrastIncreasing,
    Brightness,
    BrightnessIncreasing,
    Sharpness,
    SharpnessIncreasing,
    ShearX,
    ShearY,
    TranslateXRel,
    TranslateYRel,
}

/// <summary>
/// timm's <c>rand_augment_transform</c> (the version the official Swin-derived training code runs, timm 0.4.12):
/// for each of <see cref="NumOps"/> layers an op is chosen uniformly with replacement and applied with probability ½;
/// its magnitude is <see cref="Magnitude"/> plus N(0, <see cref="MagnitudeStd"/>) noise drawn per application
/// (uniform in [0, m] when the std is infinite), clipped to [0, 10], then mapped to the op's parameter by timm's
/// level functions (signed parameters negated with probability ½). Geometric ops fill with the dataset mean colour
/// and resample with the recipe's interpolation.
/// </summary>
public sealed class RandAugment : IImageTransform
{
    private const double MaxLevel = 10.0;

    /// <summary>timm's <c>_RAND_TRANSFORMS</c>.</summary>
    internal static readonly AugmentOp[] StandardOps =
    [
        AugmentOp.AutoContrast, AugmentOp.Equalize, AugmentOp.Invert, AugmentOp.Rotate, AugmentOp.Posterize,
        AugmentOp.Solarize, AugmentOp.SolarizeAdd, AugmentOp.Color, AugmentOp.Contrast, AugmentOp.Brightness,
        AugmentOp.Sharpness, AugmentOp.ShearX, AugmentOp.ShearY, AugmentOp.TranslateXRel, AugmentOp.TranslateYRel,
    ];

    /// <summary>timm's <c>_RAND_INCREASING_TRANSFORMS</c> ("inc1").</summary>
    internal static readonly AugmentOp[] IncreasingOps =
    [
        AugmentOp.AutoContrast, AugmentOp.Equalize, AugmentOp.Invert, AugmentOp.Rotate, AugmentOp.PosterizeIncreasing,
        AugmentOp.SolarizeIncreasing, AugmentOp.SolarizeAdd, AugmentOp.ColorIncreasing, AugmentOp.ContrastIncreasing,
        AugmentOp.BrightnessIncreasing, AugmentOp.SharpnessIncreasing, AugmentOp.ShearX, AugmentOp.ShearY,
        AugmentOp.TranslateXRel, AugmentOp.TranslateYRel,
    ];

    private readonly (byte R, byte G, byte B) _fill;
    private readonly Interpolation _interpolation;

    internal RandAugment(IReadOnlyList<AugmentOp> ops, int numOps, double magnitude, double magnitudeStd,
        (byte R, byte G, byte B) fill, Interpolation interpolation)
    {
        Ops = ops;
        NumOps = numOps;
        Magnitude = magnitude;
        MagnitudeStd = magnitudeStd;
        _fill = fill;
        _interpolation = interpolation;
    }

    internal IReadOnlyList<AugmentOp> Ops { get; }

    /// <summary>Ops applied per image (timm's n).</summary>
    public int NumOps { get; }

    /// <summary>Magnitude of the ops, 0–10 (timm's m).</summary>
    public double Magnitude { get; }

    /// <summary>Standard deviation of the magnitude's noise (timm's mstd; infinity = uniform in [0, m]).</summary>
    public double MagnitudeStd { get; }

    /// <summary>
    /// Parses timm's config string: <c>rand</c> followed by dash-separated sections <c>m</c> (magnitude, default 10),
    /// <c>n</c> (ops per image, default 2), <c>mstd</c> (magnitude noise std, default 0; <c>inf</c> for uniform) and
    /// <c>inc</c> (1 = the increasing-severity op set), e.g. <c>rand-m9-mstd0.5-inc1</c>.
    /// </summary>
    /// <param name="spec">The config string.</param>
    /// <param name="fill">Colour of the area geometric ops uncover (the recipe uses the dataset's mean colour).</param>
    /// <param name="interpolation">How geometric ops resample.</param>
    /// <exception cref="NotSupportedException">The policy is not RandAugment.</exception>
    /// <exception cref="FormatException">A section is malformed or unknown.</exception>
    public static RandAugment Parse(string spec, (byte R, byte G, byte B) fill, Interpolation interpolation)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(spec);
        var sections = spec.Split('-');
        if (sections[0] != "rand")
            throw new NotSupportedException(
                $"Auto-augment policy '{spec}' is not supported; use a RandAugment string such as 'rand-m9-mstd0.5-inc1' (or none).");
        double magnitude = MaxLevel, std = 0;
        int numOps = 2;
        bool increasing = false;
        foreach (var section in sections.Skip(1))
        {
            // timm splits each section at its first digit: "mstd0.5" → ("mstd", "0.5").
            var match = Regex.Match(section, @"^([a-z]+)(\d.*|inf)$");
            if (!match.Success)
                throw new FormatException($"RandAugment section '{section}' in '{spec}' is not a key followed by a number (e.g. m9, n2, mstd0.5, inc1).");
            string key = match.Groups[1].Value, value = match.Groups[2].Value;
            switch (key)
            {
                case "m": magnitude = int.Parse(value, CultureInfo.InvariantCulture); break;
                case "n": numOps = int.Parse(value, CultureInfo.InvariantCulture); break;
                case "mstd": std = value == "inf" ? double.PositiveInfinity : double.Parse(value, CultureInfo.InvariantCulture); break;
                // timm 0.4.12 takes bool("0") as true; "inc0" meaning "off" is the sane reading and what later timm does.
                case "inc": increasing = int.Parse(value, CultureInfo.InvariantCulture) != 0; break;
                default:
                    throw new FormatException($"RandAugment section '{section}' in '{spec}' is unknown; supported keys: m, n, mstd, inc.");
            }
        }
        if (numOps < 0) throw new FormatException($"RandAugment '{spec}' asks for {numOps} ops per image; use n ≥ 0.");
        return new RandAugment(increasing ? IncreasingOps : StandardOps, numOps, magnitude, std, fill, interpolation);
    }

    /// <inheritdoc />
    public RgbImage Apply(RgbImage image, SampleRng rng)
    {
        ArgumentNullException.ThrowIfNull(image);
        ArgumentNullException.ThrowIfNull(rng);
        for (int layer = 0; layer < NumOps; layer++)
        {
            var op = Ops[rng.Integer(0, Ops.Count - 1)];
            if (rng.NextDouble() > 0.5) continue; // each chosen op is applied with probability 0.5 (timm's AugmentOp.prob)
            double magnitude = Magnitude;
            if (double.IsPositiveInfinity(MagnitudeStd)) magnitude = rng.Uniform(0, magnitude);
            else if (MagnitudeStd > 0) magnitude = rng.Gauss(magnitude, MagnitudeStd);
            magnitude = Math.Clamp(magnitude, 0, MaxLevel);
            double argument = Argument(op, magnitude);
            if (IsSigned(op) && rng.NextDouble() > 0.5) argument = -argument;
            image = ApplyOp(image, op, argument);
        }
        return image;
    }

    /// <summary>timm's level → argument mapping (before the random sign of signed ops).</summary>
    internal static double Argument(AugmentOp op, double magnitude)
    {
        double level = magnitude / MaxLevel;
        return op switch
        {
            AugmentOp.AutoContrast or AugmentOp.Equalize or AugmentOp.Invert => 0,
            AugmentOp.Rotate => level * 30.0,
            AugmentOp.Posterize => (int)(level * 4),
            AugmentOp.PosterizeIncreasing => 4 - (int)(level * 4),
            AugmentOp.Solarize => (int)(level * 256),
            AugmentOp.SolarizeIncreasing => 256 - (int)(level * 256),
            AugmentOp.SolarizeAdd => (int)(level * 110),
            AugmentOp.Color or AugmentOp.Contrast or AugmentOp.Brightness or AugmentOp.Sharpness => level * 1.8 + 0.1,
            // "Increasing" enhancements: 1 ± 0.9·level, the sign drawn in Apply (applied to the offset from 1).
            AugmentOp.ColorIncreasing or AugmentOp.ContrastIncreasing or AugmentOp.BrightnessIncreasing
                or AugmentOp.SharpnessIncreasing => level * 0.9,
            AugmentOp.ShearX or AugmentOp.ShearY => level * 0.3,
            AugmentOp.TranslateXRel or AugmentOp.TranslateYRel => level * 0.45,
            _ => throw new ArgumentOutOfRangeException(nameof(op), op, null),
        };
    }

    internal static bool IsSigned(AugmentOp op) => op is AugmentOp.Rotate or AugmentOp.ShearX or AugmentOp.ShearY
        or AugmentOp.TranslateXRel or AugmentOp.TranslateYRel or AugmentOp.ColorIncreasing
        or AugmentOp.ContrastIncreasing or AugmentOp.BrightnessIncreasing or AugmentOp.SharpnessIncreasing;

    /// <summary>Applies one op with its (signed) argument from <see cref="Argument"/>.</summary>
    internal RgbImage ApplyOp(RgbImage image, AugmentOp op, double argument) => op switch
    {
        AugmentOp.AutoContrast => PixelOps.AutoContrast(image),
        AugmentOp.Equalize => PixelOps.Equalize(image),
        AugmentOp.Invert => PixelOps.Invert(image),
        AugmentOp.Rotate => AffineWarp.Rotate(image, argument, _fill, _interpolation),
        AugmentOp.Posterize or AugmentOp.PosterizeIncreasing => PixelOps.Posterize(image, (int)argument),
        AugmentOp.Solarize or AugmentOp.SolarizeIncreasing => PixelOps.Solarize(image, (int)argument),
        AugmentOp.SolarizeAdd => PixelOps.SolarizeAdd(image, (int)argument),
        AugmentOp.Color => PixelOps.Color(image, argument),
        AugmentOp.ColorIncreasing => PixelOps.Color(image, 1 + argument),
        AugmentOp.Contrast => PixelOps.Contrast(image, argument),
        AugmentOp.ContrastIncreasing => PixelOps.Contrast(image, 1 + argument),
        AugmentOp.Brightness => PixelOps.Brightness(image, argument),
        AugmentOp.BrightnessIncreasing => PixelOps.Brightness(image, 1 + argument),
        AugmentOp.Sharpness => PixelOps.Sharpness(image, argument),
        AugmentOp.SharpnessIncreasing => PixelOps.Sharpness(image, 1 + argument),
        AugmentOp.ShearX => AffineWarp.ShearX(image, argument, _fill, _interpolation),
        AugmentOp.ShearY => AffineWarp.ShearY(image, argument, _fill, _interpolation),
        AugmentOp.TranslateXRel => AffineWarp.Translate(image, argument * image.Width, 0, _fill, _interpolation),
        AugmentOp.TranslateYRel => AffineWarp.Translate(image, 0, argument * image.Height, _fill, _interpolation),
        _ => throw new ArgumentOutOfRangeException(nameof(op), op, null),
    };

    /// <inheritdoc />
    public override string ToString() =>
        FormattableString.Invariant($"RandAugment(n={NumOps}, m={Magnitude:0.###}, mstd={MagnitudeStd:0.###}, ops=[{string.Join(", ", Ops)}], fill=({_fill.R}, {_fill.G}, {_fill.B}))");
}
