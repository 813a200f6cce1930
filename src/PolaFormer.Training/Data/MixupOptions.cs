namespace PolaFormer.Training.Data;

/// <summary>
/// Settings of <see cref="Mixup"/>: timm's <c>Mixup</c> in mode 'batch' (one λ and one choice of mixup or cutmix per
/// batch). The defaults are the official recipe (Swin's config: mixup 0.8, cutmix 1.0, probability 1, switch 0.5,
/// label smoothing 0.1).
/// </summary>
public sealed record MixupOptions
{
    /// <summary>Beta(α, α) parameter of mixup's λ; 0 disables mixup.</summary>
    public double MixupAlpha { get; init; } = 0.8;

    /// <summary>Beta(α, α) parameter of cutmix's λ; 0 disables cutmix.</summary>
    public double CutmixAlpha { get; init; } = 1.0;

    /// <summary>Probability that a batch is mixed at all.</summary>
    public double Probability { get; init; } = 1.0;

    /// <summary>Probability of cutmix instead of mixup when both are enabled.</summary>
    public double SwitchProbability { get; init; } = 0.5;

    /// <summary>Label smoothing ε of the soft targets: off-class value ε / classes, true class 1 − ε + ε / classes.</summary>
    public double LabelSmoothing { get; init; } = 0.1;

    /// <summary>Whether cutmix's λ is recomputed from the box actually pasted (after clipping at the border), as timm's
    /// default <c>correct_lam=True</c>.</summary>
    public bool CorrectLambda { get; init; } = true;

    /// <summary>True when images are mixed (some α &gt; 0 and a positive probability); otherwise only the labels are
    /// smoothed.</summary>
    public bool MixesImages => (MixupAlpha > 0 || CutmixAlpha > 0) && Probability > 0;

    /// <summary>The official recipe: mixup 0.8, cutmix 1.0, switch probability 0.5, label smoothing 0.1.</summary>
    public static MixupOptions ImageNet => new();

    /// <summary>No image mixing; soft targets with label smoothing 0.1 only.</summary>
    public static MixupOptions LabelSmoothingOnly => new() { MixupAlpha = 0, CutmixAlpha = 0 };
}
