namespace PolaFormer.Training.Data;

/// <summary>
/// The 8-bit colour operations of RandAugment and ColorJitter with PIL's semantics (<c>ImageOps</c>,
/// <c>ImageEnhance</c>, <c>Image.blend</c>), which is what timm and torchvision apply to PIL images: per-channel
/// lookup tables, blends computed in float and truncated, greyscale by ITU-R 601 in 16-bit fixed point.
/// </summary>
internal static class PixelOps
{
    public static RgbImage Invert(RgbImage image) => ApplyLut(image, Lut(i => 255 - i));

    /// <summary>PIL <c>ImageOps.solarize</c>: values at or above the threshold are inverted.</summary>
    public static RgbImage Solarize(RgbImage image, int threshold) => ApplyLut(image, Lut(i => i < threshold ? i : 255 - i));

    /// <summary>timm <c>solarize_add</c>: adds to values below the threshold, saturating at 255.</summary>
    public static RgbImage SolarizeAdd(RgbImage image, int add, int threshold = 128) =>
        ApplyLut(image, Lut(i => i < threshold ? Math.Min(255, i + add) : i));

    /// <summary>PIL <c>ImageOps.posterize</c>: keeps the top <paramref name="bits"/> bits (0 keeps none: black).</summary>
    public static RgbImage Posterize(RgbImage image, int bits)
    {
        if (bits >= 8) return image.Clone();
        int mask = ~((1 << (8 - Math.Max(bits, 0))) - 1);
        return ApplyLut(image, Lut(i => i & mask));
    }

    /// <summary>PIL <c>ImageOps.autocontrast</c> (no cutoff): each channel's range is stretched to 0..255.</summary>
    public static RgbImage AutoContrast(RgbImage image)
    {
        var histograms = Histograms(image);
        var luts = new byte[3][];
        for (int c = 0; c < 3; c++)
        {
            var h = histograms[c];
            int lo = 0, hi = 255;
            while (lo < 256 && h[lo] == 0) lo++;
            while (hi >= 0 && h[hi] == 0) hi--;
            if (hi <= lo)
            {
                luts[c] = Lut(i => i);
                continue;
            }
            double scale = 255.0 / (hi - lo), offset = -lo * scale;
            luts[c] = Lut(i => Math.Clamp((int)(i * scale + offset), 0, 255));
        }
        return ApplyLuts(image, luts);
    }

    /// <summary>PIL <c>ImageOps.equalize</c>: each channel through its cumulative histogram.</summary>
    public static RgbImage Equalize(RgbImage image)
    {
        var histograms = Histograms(image);
        var luts = new byte[3][];
        for (int c = 0; c < 3; c++)
        {
            var h = histograms[c];
            long total = 0, last = 0;
            int nonZero = 0;
            for (int i = 0; i < 256; i++)
            {
                if (h[i] == 0) continue;
                nonZero++;
                total += h[i];
                last = h[i];
            }
            long step = nonZero <= 1 ? 0 : (total - last) / 255;
            if (step == 0)
            {
                luts[c] = Lut(i => i);
                continue;
            }
            var lut = new byte[256];
            long n = step / 2;
            for (int i = 0; i < 256; i++)
            {
                lut[i] = (byte)Math.Min(255, n / step);
                n += h[i];
            }
            luts[c] = lut;
        }
        return ApplyLuts(image, luts);
    }

    /// <summary>PIL <c>ImageEnhance.Brightness</c>: blend with black.</summary>
    public static RgbImage Brightness(RgbImage image, double factor) =>
        Blend(new RgbImage(image.Width, image.Height, 0, 0, 0), image, factor);

    /// <summary>PIL <c>ImageEnhance.Color</c> (saturation): blend with the greyscale image.</summary>
    public static RgbImage Color(RgbImage image, double factor)
    {
        var grey = RgbImage.Blank(image.Width, image.Height);
        var p = image.Pixels;
        for (int i = 0; i < p.Length; i += 3)
        {
            byte l = Luma(p[i], p[i + 1], p[i + 2]);
            grey.Pixels[i] = grey.Pixels[i + 1] = grey.Pixels[i + 2] = l;
        }
        return Blend(grey, image, factor);
    }

    /// <summary>PIL <c>ImageEnhance.Contrast</c>: blend with the mean grey level (rounded).</summary>
    public static RgbImage Contrast(RgbImage image, double factor)
    {
        var p = image.Pixels;
        long sum = 0;
        for (int i = 0; i < p.Length; i += 3) sum += Luma(p[i], p[i + 1], p[i + 2]);
        byte mean = (byte)(int)((double)sum / (image.Width * image.Height) + 0.5);
        return Blend(new RgbImage(image.Width, image.Height, mean, mean, mean), image, factor);
    }

    /// <summary>PIL <c>ImageEnhance.Sharpness</c>: blend with the SMOOTH-filtered image (3×3 kernel 1 1 1 / 1 5 1 /
    /// 1 1 1 over 13, the border pixels kept).</summary>
    public static RgbImage Sharpness(RgbImage image, double factor)
    {
        var smooth = image.Clone();
        int w = image.Width, h = image.Height, stride = w * 3;
        var src = image.Pixels;
        var dst = smooth.Pixels;
        for (int y = 1; y < h - 1; y++)
            for (int x = 1; x < w - 1; x++)
                for (int c = 0; c < 3; c++)
                {
                    int o = y * stride + x * 3 + c;
                    int s = src[o - stride - 3] + src[o - stride] + src[o - stride + 3]
                          + src[o - 3] + 5 * src[o] + src[o + 3]
                          + src[o + stride - 3] + src[o + stride] + src[o + stride + 3];
                    dst[o] = (byte)Math.Min(255, (int)(s / 13f + 0.5f));
                }
        return Blend(smooth, image, factor);
    }

    /// <summary>PIL <c>Image.blend(a, b, alpha)</c> = a + alpha·(b − a), in float, clipped and truncated.</summary>
    public static RgbImage Blend(RgbImage a, RgbImage b, double alpha)
    {
        float f = (float)alpha;
        var output = new byte[a.Pixels.Length];
        var pa = a.Pixels;
        var pb = b.Pixels;
        for (int i = 0; i < output.Length; i++)
        {
            float v = pa[i] + f * (pb[i] - pa[i]);
            output[i] = v <= 0 ? (byte)0 : v >= 255 ? (byte)255 : (byte)v;
        }
        return new RgbImage(a.Width, a.Height, output);
    }

    /// <summary>PIL's RGB → L conversion: (R·19595 + G·38470 + B·7471 + 2¹⁵) » 16.</summary>
    public static byte Luma(byte r, byte g, byte b) => (byte)((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16);

    private static byte[] Lut(Func<int, int> f)
    {
        var lut = new byte[256];
        for (int i = 0; i < 256; i++) lut[i] = (byte)Math.Clamp(f(i), 0, 255);
        return lut;
    }

    private static RgbImage ApplyLut(RgbImage image, byte[] lut) => ApplyLuts(image, [lut, lut, lut]);

    private static RgbImage ApplyLuts(RgbImage image, byte[][] luts)
    {
        var src = image.Pixels;
        var dst = new byte[src.Length];
        for (int i = 0; i < src.Length; i += 3)
        {
            dst[i] = luts[0][src[i]];
            dst[i + 1] = luts[1][src[i + 1]];
            dst[i + 2] = luts[2][src[i + 2]];
        }
        return new RgbImage(image.Width, image.Height, dst);
    }

    internal static long[][] Histograms(RgbImage image)
    {
        var h = new[] { new long[256], new long[256], new long[256] };
        var p = image.Pixels;
        for (int i = 0; i < p.Length; i += 3)
        {
            h[0][p[i]]++;
            h[1][p[i + 1]]++;
            h[2][p[i + 2]]++;
        }
        return h;
    }
}
