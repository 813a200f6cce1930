using PolaFormer.Models;
using static TorchSharp.torch;

namespace PolaFormer.Pretrained;

/// <summary>
/// The evaluation preprocessing of a model's pretrained configuration on image tensors, needing no image library:
/// resize by the crop fraction, centre crop to the input size, scale to [0, 1], normalise with the mean and standard
/// deviation — timm's evaluation transform for the same <see cref="PretrainedConfig"/>.
/// </summary>
/// <remarks>
/// <para>Images are tensors with channels first: (3, H, W) or (B, 3, H, W), either 8-bit (0–255) or floating point
/// already in [0, 1], in RGB order, on any device. The result is float32 (B, 3, h, w) on the input's device.</para>
/// <para>With <see cref="ResizeMode.Squash"/> (the authors' evaluation) both sides are resized to
/// ⌊side / CropFraction⌋; with <see cref="ResizeMode.ShorterSide"/> and a square input size the shorter side is
/// resized to ⌊size / CropFraction⌋ and the other in proportion (torchvision's <c>Resize(int)</c>), and a non-square
/// input size squashes. Resampling is LibTorch's antialiased bilinear or bicubic (torchvision's tensor path), which
/// agrees with PIL's to within a few 1/255 steps, not bit for bit.</para>
/// </remarks>
/// <example><code>
/// var preprocess = ImagePreprocessor.ForModel("pola_swin_tiny");
/// using var batch = preprocess.Apply(image);   // image: (3, H, W) bytes → (1, 3, 224, 224) float32
/// </code></example>
public sealed class ImagePreprocessor
{
    /// <summary>Creates the preprocessing of a pretrained configuration.</summary>
    /// <exception cref="ArgumentException">A size, crop fraction or standard deviation is not positive.</exception>
    public ImagePreprocessor(PretrainedConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        var (height, width) = config.InputSize;
        if (height <= 0 || width <= 0)
            throw new ArgumentException($"config.InputSize is ({height}, {width}); expected positive sides.", nameof(config));
        if (!(config.CropFraction > 0 && config.CropFraction <= 1))
            throw new ArgumentException($"config.CropFraction is {config.CropFraction}; expected a fraction in (0, 1].", nameof(config));
        if (!(config.Std.Red > 0 && config.Std.Green > 0 && config.Std.Blue > 0))
            throw new ArgumentException($"config.Std is {config.Std}; expected three positive values.", nameof(config));
        Config = config;
    }

    /// <summary>The preprocessing of a registered model: its pretrained configuration where it has one, else the
    /// ImageNet defaults of <see cref="PretrainedConfig"/> at the model's input size.</summary>
    /// <param name="modelName">A name in <see cref="ModelRegistry.Names"/>.</param>
    /// <param name="inputSize">The size the model was built for when not its preset's (e.g. fine-tuned at 64 px).</param>
    /// <exception cref="ArgumentException">The name is not registered.</exception>
    public static ImagePreprocessor ForModel(string modelName, (long Height, long Width)? inputSize = null)
    {
        var info = ModelRegistry.Describe(modelName);
        var config = PretrainedConfigs.Find(modelName) ?? new PretrainedConfig { ModelName = modelName, InputSize = info.InputSize };
        return new ImagePreprocessor(inputSize is { } size ? config with { InputSize = size } : config);
    }

    /// <summary>The configuration this preprocessing follows.</summary>
    public PretrainedConfig Config { get; }

    /// <summary>The size images are resized to before the centre crop, for an image of <paramref name="height"/> ×
    /// <paramref name="width"/> pixels.</summary>
    public (long Height, long Width) ResizeTarget(long height, long width)
    {
        var (targetHeight, targetWidth) = Config.InputSize;
        if (Config.Resize == ResizeMode.Squash || targetHeight != targetWidth)
            return (Scaled(targetHeight), Scaled(targetWidth));
        long shorter = Scaled(targetHeight);
        // torchvision: the shorter side becomes `shorter`, the longer one int(shorter · long / short).
        return height <= width
            ? (shorter, (long)(shorter * (double)width / height))
            : ((long)(shorter * (double)height / width), shorter);
    }

    /// <summary>Prepares images for the model.</summary>
    /// <param name="images">(3, H, W) or (B, 3, H, W), uint8 (0–255) or floating point in [0, 1], RGB.</param>
    /// <returns>Float32 (B, 3, h, w) with (h, w) = <see cref="PretrainedConfig.InputSize"/>, normalised.</returns>
    /// <exception cref="ArgumentException">The tensor is not 3 or 4-D with 3 channels, is empty, or is of another
    /// dtype.</exception>
    public Tensor Apply(Tensor images)
    {
        ArgumentNullException.ThrowIfNull(images);
        if (images.dim() is not (3 or 4) || images.shape[^3] != 3)
            throw new ArgumentException(
                $"images has shape {Check.Format(images.shape)}; expected (3, H, W) or (B, 3, H, W) with RGB channels first.", nameof(images));
        bool bytes = images.dtype == ScalarType.Byte;
        if (!bytes && !images.is_floating_point())
            throw new ArgumentException(
                $"images has dtype {images.dtype}; expected Byte (0–255) or a floating-point type in [0, 1].", nameof(images));
        if (images.numel() == 0)
            throw new ArgumentException($"images has shape {Check.Format(images.shape)}; expected at least one pixel.", nameof(images));

        using var scope = NewDisposeScope();
        var x = images.dim() == 3 ? images.unsqueeze(0) : images;
        x = bytes ? x.to_type(ScalarType.Float32).DividedBy(255.0) : x.to_type(ScalarType.Float32);
        long height = x.shape[2], width = x.shape[3];
        var (resizeHeight, resizeWidth) = ResizeTarget(height, width);
        if (resizeHeight != height || resizeWidth != width)
        {
            var mode = Config.Interpolation == ImageInterpolation.Bicubic ? InterpolationMode.Bicubic : InterpolationMode.Bilinear;
            x = nn.functional.interpolate(x, size: [resizeHeight, resizeWidth], mode: mode, align_corners: false, antialias: true);
        }

        var (cropHeight, cropWidth) = Config.InputSize;
        // torchvision's centre crop: int(round(excess / 2)), Python's round being half to even like Math.Round.
        long top = (long)Math.Round((resizeHeight - cropHeight) / 2.0), left = (long)Math.Round((resizeWidth - cropWidth) / 2.0);
        x = x.narrow(2, top, cropHeight).narrow(3, left, cropWidth);

        var mean = tensor(new[] { (float)Config.Mean.Red, (float)Config.Mean.Green, (float)Config.Mean.Blue }, device: x.device).reshape(1, 3, 1, 1);
        var std = tensor(new[] { (float)Config.Std.Red, (float)Config.Std.Green, (float)Config.Std.Blue }, device: x.device).reshape(1, 3, 1, 1);
        return ((x - mean) / std).contiguous().MoveToOuterDisposeScope();
    }

    private long Scaled(long side) => (long)Math.Floor(side / Config.CropFraction + 1e-9);
}
