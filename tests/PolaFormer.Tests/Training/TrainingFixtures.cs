using PolaFormer.Models;
using PolaFormer.Training.Data;
using SkiaSharp;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Training;

/// <summary>Small real image folders and a small real PolaFormer for training tests.</summary>
internal static class TrainingFixtures
{
    /// <summary>Writes train/ and val/ with <paramref name="classes"/> classes as real JPEG (and some PNG) files:
    /// each class a different colour and stripe direction, with per-image noise.</summary>
    public static string WriteImageFolder(string root, int classes, int trainPerClass, int valPerClass, int size = 40, int seed = 1)
    {
        var random = new Random(seed);
        foreach (var (split, count) in new[] { ("train", trainPerClass), ("val", valPerClass) })
        {
            for (int c = 0; c < classes; c++)
            {
                var folder = Path.Combine(root, split, $"class{c}");
                Directory.CreateDirectory(folder);
                for (int i = 0; i < count; i++)
                {
                    bool png = i % 5 == 4;
                    Write(Path.Combine(folder, $"{i}.{(png ? "png" : "JPEG")}"), size, c, random, png);
                }
            }
        }
        return root;
    }

    private static void Write(string path, int size, int c, Random random, bool png)
    {
        using var bitmap = new SKBitmap(size, size + 6);
        var hue = (byte)(40 + 70 * c);
        for (int y = 0; y < bitmap.Height; y++)
            for (int x = 0; x < bitmap.Width; x++)
            {
                bool stripe = (c % 2 == 0 ? x : y) / 4 % 2 == 0;
                int noise = random.Next(-20, 21);
                byte v(int b) => (byte)Math.Clamp(b + noise, 0, 255);
                bitmap.SetPixel(x, y, stripe ? new SKColor(v(hue), v(255 - hue), v(128)) : new SKColor(v(20), v(20), v(20)));
            }
        using var data = bitmap.Encode(png ? SKEncodedImageFormat.Png : SKEncodedImageFormat.Jpeg, 90);
        File.WriteAllBytes(path, data.ToArray());
    }

    /// <summary>The ImageNet recipe (RandAugment, random erasing, mixup/cutmix…) at 32 × 32.</summary>
    public static DataRecipe SmallImageNetRecipe => DataRecipe.ImageNet with { ImageSize = 32 };

    /// <summary>A four-stage Pola-PVT small enough to train in seconds; drop path on, so its RNG is exercised.</summary>
    /// <remarks>Every convolution's input width is at most 16 or a multiple of 16: LibTorch 2.10's oneDNN f32
    /// convolution on AVX-512 CPUs returns wrong values (errors of ~15 on unit-variance data) for other widths above 16
    /// — see README § Compatibility — and a stage of 24 channels made these tests fail with NaN losses there.</remarks>
    public static Backbone TinyPvt(long classes, Device device) => new PolaPyramidVisionTransformer(new PolaPvtOptions
    {
        ImageSize = (32, 32), EmbedDims = [8, 16, 32, 32], NumHeads = [1, 2, 2, 4], MlpRatios = [2, 2, 2, 2], Depths = [1, 1, 1, 1],
        NumClasses = classes, DropPathRate = 0.1,
    }, device);
}
