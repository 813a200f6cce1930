using PolaFormer.Pretrained;
namespace PolaFormer.Training.Data;

/// <summary>
/// The data side of a training recipe: how <see cref="ImagePipeline.Train"/> augments and
/// <see cref="ImagePipeline.Eval"/> resizes, and how batches are mixed. The defaults are the official PolaFormer
/// recipe (its training code is Swin's, which calls timm's <c>create_transform</c>):
/// RandomResizedCrop(224, scale 0.08–1, ratio 3/4–4/3, bicubic), horizontal flip 0.5, RandAugment
/// <c>rand-m9-mstd0.5-inc1</c>, random erasing 0.25 (pixel mode, one box), ImageNet mean/std; evaluation resizes to
/// ⌊224 / 0.875⌋ = 256 and centre-crops 224; mixup 0.8 / cutmix 1.0 with label smoothing 0.1.
/// <para>Colour jitter 0.4 is in the official config but timm's <c>transforms_imagenet_train</c> only applies it when
/// no auto-augment policy is set, so with RandAugment on it is skipped here too (the pipeline's
/// <see cref="ImagePipeline.Stages"/> say so).</para>
/// </summary>
public sealed record DataRecipe
{
    /// <summary>Side of the square network input, in pixels.</summary>
    public int ImageSize { get; init; } = 224;

    /// <summary>RandomResizedCrop's range of the crop's area as a fraction of the image's.</summary>
    public (double Min, double Max) Scale { get; init; } = (0.08, 1.0);

    /// <summary>RandomResizedCrop's range of the crop's aspect ratio (width / height), sampled log-uniformly.</summary>
    public (double Min, double Max) Ratio { get; init; } = (3.0 / 4.0, 4.0 / 3.0);

    /// <summary>Probability of a horizontal flip; 0 for none.</summary>
    public double HorizontalFlip { get; init; } = 0.5;

    /// <summary>timm RandAugment string (<c>rand-m9-mstd0.5-inc1</c>: 2 ops, magnitude 9 ± N(0, 0.5), increasing
    /// ops); null or empty for none.</summary>
    public string? AutoAugment { get; init; } = "rand-m9-mstd0.5-inc1";

    /// <summary>Colour jitter strength (brightness, contrast and saturation factors in [1 − s, 1 + s]); applied only
    /// when <see cref="AutoAugment"/> is off, as timm does.</summary>
    public double ColorJitter { get; init; } = 0.4;

    /// <summary>Probability of random erasing (timm mode 'pixel', one box, area 0.02–1/3, aspect 0.3–3.3), applied
    /// after normalisation.</summary>
    public double RandomErasing { get; init; } = 0.25;

    /// <summary>Filter of every resize and geometric augmentation.</summary>
    public Interpolation Interpolation { get; init; } = Interpolation.Bicubic;

    /// <summary>Evaluation crop fraction: images are resized to ⌊<see cref="ImageSize"/> / CropPct⌋ before the centre
    /// crop.</summary>
    public double CropPct { get; init; } = 0.875;

    /// <summary>How evaluation resizes before the crop; the official code resizes both sides (see
    /// <see cref="ResizeMode.Squash"/>).</summary>
    public ResizeMode EvalResize { get; init; } = ResizeMode.Squash;

    /// <summary>Per-channel mean of pixel values in [0, 1], subtracted after scaling.</summary>
    public (double R, double G, double B) Mean { get; init; } = (0.485, 0.456, 0.406);

    /// <summary>Per-channel standard deviation the centred values are divided by.</summary>
    public (double R, double G, double B) Std { get; init; } = (0.229, 0.224, 0.225);

    /// <summary>Batch mixing and label smoothing (<see cref="Data.Mixup"/>).</summary>
    public MixupOptions Mixup { get; init; } = MixupOptions.ImageNet;

    /// <summary>The official ImageNet recipe (the defaults).</summary>
    public static DataRecipe ImageNet => new();

    /// <summary>
    /// For the bundled 28×28 digits: upscaled to 32×32 (a 4-pixel patch grid of 28 gives 7 tokens a side, which hierarchical
    /// models cannot halve three times; 32 gives 8), a mild RandomResizedCrop (area 0.64–1, so the 20×20 digit inside MNIST's 4-pixel margin stays
    /// whole, aspect 0.8–1.25), no flip (digits are not mirror-symmetric), no RandAugment, colour jitter or erasing
    /// (greyscale strokes; inversion or erasing a stroke changes the digit), MNIST's mean 0.1307 and std 0.3081 in
    /// every channel, evaluation resizes the whole digit to 32 (crop fraction 1), label smoothing 0.1 without mixing.
    /// </summary>
    public static DataRecipe Digits => new()
    {
        ImageSize = 32,
        Scale = (0.64, 1.0),
        Ratio = (0.8, 1.25),
        HorizontalFlip = 0,
        AutoAugment = null,
        ColorJitter = 0,
        RandomErasing = 0,
        CropPct = 1.0,
        Mean = (0.1307, 0.1307, 0.1307),
        Std = (0.3081, 0.3081, 0.3081),
        Mixup = MixupOptions.LabelSmoothingOnly,
    };

    /// <summary>The fill colour of RandAugment's geometric ops: the mean in 0..255, as timm's
    /// <c>img_mean = round(255 · mean)</c> (124, 116, 104 for ImageNet).</summary>
    internal (byte R, byte G, byte B) FillColour =>
        (ToByte(Mean.R), ToByte(Mean.G), ToByte(Mean.B));

    private static byte ToByte(double v) => (byte)Math.Clamp(Math.Round(255 * v), 0, 255);

    /// <summary>The evaluation resize target ⌊ImageSize / CropPct⌋ (256 for 224 at 0.875).</summary>
    internal int EvalResizeSize => (int)Math.Floor(ImageSize / CropPct + 1e-9);

    internal void Validate()
    {
        if (ImageSize <= 0) throw new ArgumentException($"DataRecipe.ImageSize = {ImageSize}; it must be a positive number of pixels.");
        if (!(Scale.Min > 0 && Scale.Min <= Scale.Max && Scale.Max <= 1))
            throw new ArgumentException($"DataRecipe.Scale = ({Scale.Min}, {Scale.Max}); it must satisfy 0 < min ≤ max ≤ 1.");
        if (!(Ratio.Min > 0 && Ratio.Min <= Ratio.Max))
            throw new ArgumentException($"DataRecipe.Ratio = ({Ratio.Min}, {Ratio.Max}); it must satisfy 0 < min ≤ max.");
        CheckProbability(HorizontalFlip, nameof(HorizontalFlip));
        CheckProbability(RandomErasing, nameof(RandomErasing));
        if (!(ColorJitter >= 0)) throw new ArgumentException($"DataRecipe.ColorJitter = {ColorJitter}; it must be ≥ 0.");
        if (!(CropPct > 0 && CropPct <= 1)) throw new ArgumentException($"DataRecipe.CropPct = {CropPct}; it must be in (0, 1].");
        if (!(Std.R > 0 && Std.G > 0 && Std.B > 0))
            throw new ArgumentException($"DataRecipe.Std = {Std}; every channel's std must be positive.");
        ArgumentNullException.ThrowIfNull(Mixup, nameof(Mixup));
        if (!(Mixup.MixupAlpha >= 0 && Mixup.CutmixAlpha >= 0))
            throw new ArgumentException($"Mixup alphas ({Mixup.MixupAlpha}, {Mixup.CutmixAlpha}) must be ≥ 0.");
        CheckProbability(Mixup.Probability, "Mixup.Probability");
        CheckProbability(Mixup.SwitchProbability, "Mixup.SwitchProbability");
        if (!(Mixup.LabelSmoothing >= 0 && Mixup.LabelSmoothing < 1))
            throw new ArgumentException($"Mixup.LabelSmoothing = {Mixup.LabelSmoothing}; it must be in [0, 1).");
    }

    private static void CheckProbability(double p, string name)
    {
        if (!(p >= 0 && p <= 1)) throw new ArgumentException($"DataRecipe.{name} = {p}; it must be a probability in [0, 1].");
    }
}
