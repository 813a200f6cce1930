using PolaFormer.Pretrained;
namespace PolaFormer.Training.Data;

/// <summary>The evaluation transform: resize (see <see cref="ResizeMode"/>) to <see cref="ResizeTo"/>, then
/// torchvision's <c>CenterCrop(Size)</c> (offsets round((in − out) / 2), half to even).</summary>
internal sealed class ResizeCenterCrop(int size, int resizeTo, ResizeMode mode, Interpolation interpolation) : IImageTransform
{
    public int Size { get; } = size;
    public int ResizeTo { get; } = resizeTo;

    public RgbImage Apply(RgbImage image, SampleRng rng) => Apply(image);

    public RgbImage Apply(RgbImage image)
    {
        var (w, h) = ResizedSize(image.Width, image.Height);
        var resized = w == image.Width && h == image.Height ? image : Resampler.Resize(image, w, h, interpolation);
        if (w < Size || h < Size)
            throw new InvalidOperationException(
                $"Resizing {image.Width}×{image.Height} to {w}×{h} leaves less than the {Size}×{Size} centre crop; use a crop fraction ≤ 1.");
        int left = (int)Math.Round((w - Size) / 2.0), top = (int)Math.Round((h - Size) / 2.0);
        return Resampler.Crop(resized, left, top, Size, Size);
    }

    public (int Width, int Height) ResizedSize(int width, int height)
    {
        if (mode == ResizeMode.Squash) return (ResizeTo, ResizeTo);
        if (width <= height) return (ResizeTo, (int)((long)ResizeTo * height / width));
        return ((int)((long)ResizeTo * width / height), ResizeTo);
    }

    public override string ToString() =>
        FormattableString.Invariant($"Resize({(mode == ResizeMode.Squash ? $"({ResizeTo}, {ResizeTo})" : ResizeTo.ToString())}, {interpolation.ToString().ToLowerInvariant()}) + CenterCrop({Size})");
}
