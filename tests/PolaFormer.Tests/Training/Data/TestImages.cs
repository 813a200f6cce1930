using System.Diagnostics.CodeAnalysis;
using PolaFormer.Training.Data;

namespace PolaFormer.Tests.Training.Data;

/// <summary>Small synthetic images and an in-memory dataset for the data-pipeline tests.</summary>
internal static class TestImages
{
    /// <summary>R ramps with x, G with y, B is a checker of 8-pixel cells.</summary>
    public static RgbImage Gradient(int width, int height)
    {
        var p = new byte[width * height * 3];
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
            {
                int o = (y * width + x) * 3;
                p[o] = (byte)(x * 255 / Math.Max(1, width - 1));
                p[o + 1] = (byte)(y * 255 / Math.Max(1, height - 1));
                p[o + 2] = (byte)(((x / 8 + y / 8) % 2) * 200 + 20);
            }
        return new RgbImage(width, height, p);
    }

    public static RgbImage Noise(int width, int height, int seed)
    {
        var p = new byte[width * height * 3];
        new Random(seed).NextBytes(p);
        return new RgbImage(width, height, p);
    }

    public static RgbImage Solid(int width, int height, byte r, byte g, byte b)
    {
        var p = new byte[width * height * 3];
        for (int i = 0; i < p.Length; i += 3)
        {
            p[i] = r;
            p[i + 1] = g;
            p[i + 2] = b;
        }
        return new RgbImage(width, height, p);
    }

    public static (byte R, byte G, byte B) Pixel(RgbImage image, int x, int y)
    {
        int o = (y * image.Width + x) * 3;
        return (image.Pixels[o], image.Pixels[o + 1], image.Pixels[o + 2]);
    }
}

/// <summary>An in-memory dataset; indices in <paramref name="unreadable"/> fail to load, indices in
/// <paramref name="throwing"/> throw.</summary>
internal sealed class InMemoryDataset(IReadOnlyList<RgbImage> images, IReadOnlyList<int> labels, int classes,
    ISet<int>? unreadable = null, ISet<int>? throwing = null) : IImageDataset
{
    public static InMemoryDataset Synthetic(int count, int classes = 4)
    {
        var images = Enumerable.Range(0, count).Select(i => TestImages.Noise(40 + i % 7, 36 + i % 5, i)).ToArray();
        return new InMemoryDataset(images, Enumerable.Range(0, count).Select(i => i % classes).ToArray(), classes);
    }

    public int Count => images.Count;
    public IReadOnlyList<string> ClassNames { get; } = Enumerable.Range(0, classes).Select(c => $"class{c}").ToArray();
    public int Label(int index) => labels[index];
    public string Source(int index) => $"memory #{index}";

    public bool TryLoadImage(int index, [NotNullWhen(true)] out RgbImage? image)
    {
        if (throwing?.Contains(index) == true) throw new InvalidDataException($"sample {index} is broken on purpose");
        image = unreadable?.Contains(index) == true ? null : images[index].Clone();
        return image is not null;
    }
}
