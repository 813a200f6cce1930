namespace PolaFormer.Pretrained;

/// <summary>How images are resized before the centre crop.</summary>
public enum ImageInterpolation
{
    /// <summary>Bilinear resampling.</summary>
    Bilinear,

    /// <summary>Bicubic resampling (what the authors' Swin and PVT recipes evaluate with).</summary>
    Bicubic,
}

/// <summary>How the evaluation resize treats the aspect ratio (timm's <c>crop_mode</c>).</summary>
public enum ResizeMode
{
    /// <summary>Both sides to ⌊side / CropFraction⌋, not keeping the aspect ratio: the authors' evaluation
    /// (<c>data/build.py</c>: <c>Resize((s, s))</c>), with which the official PolaFormer numbers were measured
    /// (timm's <c>squash</c>).</summary>
    Squash,

    /// <summary>The shorter side to ⌊size / CropFraction⌋ and the longer in proportion (torchvision's
    /// <c>Resize(int)</c>, timm's <c>center</c>).</summary>
    ShorterSide,
}

/// <summary>Per-channel (red, green, blue) values, e.g. a normalisation mean.</summary>
/// <param name="Red">Red channel.</param>
/// <param name="Green">Green channel.</param>
/// <param name="Blue">Blue channel.</param>
public readonly record struct RgbValues(double Red, double Green, double Blue);

/// <summary>
/// Where a registered model's released weights live and how they expect images to be prepared, in the manner of
/// timm's <c>pretrained_cfg</c>. Immutable; <see cref="PretrainedConfigs"/> holds one per model with released weights.
/// </summary>
public sealed record PretrainedConfig
{
    /// <summary>The <see cref="Models.ModelRegistry"/> name the weights fit, e.g. <c>pola_swin_tiny</c>.</summary>
    public required string ModelName { get; init; }

    /// <summary>An http(s) URL or a local path of the checkpoint; null when no file name has been confirmed (the
    /// weights then have to be given as a path or URL; <see cref="PretrainedConfigs.HubFolder"/> says where to look).</summary>
    public string? Source { get; init; }

    /// <summary>Lower-case hex SHA-256 of the file; null when unknown (the download is then not verified).</summary>
    public string? Sha256 { get; init; }

    /// <summary>Classes of the checkpoint's classifier (ImageNet-1k: 1000).</summary>
    public long NumClasses { get; init; } = 1000;

    /// <summary>Image size (height, width) the weights were trained and evaluated at.</summary>
    public (long Height, long Width) InputSize { get; init; } = (224, 224);

    /// <summary>Normalisation mean, on pixel values scaled to [0, 1].</summary>
    public RgbValues Mean { get; init; } = new(0.485, 0.456, 0.406);

    /// <summary>Normalisation standard deviation, on pixel values scaled to [0, 1].</summary>
    public RgbValues Std { get; init; } = new(0.229, 0.224, 0.225);

    /// <summary>Centre-crop fraction at evaluation: the image is resized to <c>InputSize / CropFraction</c> and the
    /// centre <see cref="InputSize"/> is kept (0.875: 256 → 224).</summary>
    public double CropFraction { get; init; } = 0.875;

    /// <summary>Whether the evaluation resize keeps the aspect ratio (default: the authors' squash).</summary>
    public ResizeMode Resize { get; init; } = ResizeMode.Squash;

    /// <summary>Resampling of the evaluation resize.</summary>
    public ImageInterpolation Interpolation { get; init; } = ImageInterpolation.Bicubic;

    /// <summary>ImageNet-1k top-1 (%) the authors report for these weights, where they report one.</summary>
    public double? ReportedTop1 { get; init; }
}
