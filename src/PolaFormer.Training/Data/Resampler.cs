namespace PolaFormer.Training.Data;

/// <summary>
/// Resizing with PIL's semantics (<c>Image.resize</c>, which torchvision calls for PIL images): a separable
/// convolution whose kernel is widened by the downscale factor (so downscaling antialiases), coefficients in
/// 22-bit fixed point, the horizontal pass first into an 8-bit intermediate, then the vertical pass.
/// <para>Why not SkiaSharp's cubic resampler: it does not widen the kernel when downscaling (it aliases), and its
/// output varies with Skia's version and CPU features; this code is deterministic everywhere.</para>
/// </summary>
internal static class Resampler
{
    private const int PrecisionBits = 32 - 8 - 2;

    /// <summary>Resizes the <paramref name="cropWidth"/>×<paramref name="cropHeight"/> region at
    /// (<paramref name="left"/>, <paramref name="top"/>) of <paramref name="image"/> to width × height: torchvision's
    /// <c>resized_crop</c> (crop, then resize).</summary>
    public static RgbImage ResizeRegion(RgbImage image, int left, int top, int cropWidth, int cropHeight,
        int width, int height, Interpolation filter)
    {
        if (left < 0 || top < 0 || cropWidth <= 0 || cropHeight <= 0 || left + cropWidth > image.Width || top + cropHeight > image.Height)
            throw new ArgumentException(
                $"crop ({left}, {top}, {cropWidth}×{cropHeight}) does not lie inside the {image.Width}×{image.Height} image.");
        if (width <= 0 || height <= 0) throw new ArgumentException($"target size {width}×{height} must be positive.");

        if (cropWidth == width && cropHeight == height) return Crop(image, left, top, width, height);

        var (vBounds, vWeights, vTaps) = Coefficients(cropHeight, height, filter);
        // Only the source rows the vertical pass reads need the horizontal pass (as PIL does with a box).
        int firstRow = vBounds[0];
        int lastRow = vBounds[2 * (height - 1)] + vBounds[2 * (height - 1) + 1];
        for (int y = 0; y < height; y++)
        {
            firstRow = Math.Min(firstRow, vBounds[2 * y]);
            lastRow = Math.Max(lastRow, vBounds[2 * y] + vBounds[2 * y + 1]);
        }

        byte[] rows;
        int rowsStride;
        if (cropWidth != width)
        {
            var (hBounds, hWeights, hTaps) = Coefficients(cropWidth, width, filter);
            rowsStride = width * 3;
            rows = new byte[(lastRow - firstRow) * rowsStride];
            HorizontalPass(image, left, top + firstRow, lastRow - firstRow, rows, width, hBounds, hWeights, hTaps);
        }
        else
        {
            rowsStride = cropWidth * 3;
            rows = new byte[(lastRow - firstRow) * rowsStride];
            for (int y = firstRow; y < lastRow; y++)
                Array.Copy(image.Pixels, ((top + y) * image.Width + left) * 3, rows, (y - firstRow) * rowsStride, rowsStride);
        }

        if (cropHeight == height) return new RgbImage(width, height, rows);

        var output = new byte[width * height * 3];
        var sums = new int[rowsStride];
        for (int y = 0; y < height; y++)
        {
            int yMin = vBounds[2 * y] - firstRow, count = vBounds[2 * y + 1];
            int kOffset = y * vTaps;
            Array.Fill(sums, 1 << (PrecisionBits - 1));
            // Row by row (rather than pixel by pixel) keeps the reads sequential.
            for (int k = 0; k < count; k++)
            {
                int weight = vWeights[kOffset + k];
                var row = rows.AsSpan((yMin + k) * rowsStride, rowsStride);
                for (int x = 0; x < row.Length; x++) sums[x] += row[x] * weight;
            }
            var target = output.AsSpan(y * rowsStride, rowsStride);
            for (int x = 0; x < target.Length; x++) target[x] = Clip8(sums[x]);
        }
        return new RgbImage(width, height, output);
    }

    /// <summary>Resizes the whole image.</summary>
    public static RgbImage Resize(RgbImage image, int width, int height, Interpolation filter) =>
        ResizeRegion(image, 0, 0, image.Width, image.Height, width, height, filter);

    public static RgbImage Crop(RgbImage image, int left, int top, int width, int height)
    {
        var pixels = new byte[width * height * 3];
        for (int y = 0; y < height; y++)
            Array.Copy(image.Pixels, ((top + y) * image.Width + left) * 3, pixels, y * width * 3, width * 3);
        return new RgbImage(width, height, pixels);
    }

    private static void HorizontalPass(RgbImage image, int left, int top, int rowCount, byte[] output, int width,
        int[] bounds, int[] weights, int taps)
    {
        var src = image.Pixels;
        int srcStride = image.Width * 3;
        for (int y = 0; y < rowCount; y++)
        {
            int rowStart = (top + y) * srcStride + left * 3;
            int outRow = y * width * 3;
            for (int x = 0; x < width; x++)
            {
                int xMin = bounds[2 * x], count = bounds[2 * x + 1], kOffset = x * taps;
                int r = 1 << (PrecisionBits - 1), g = r, b = r;
                int p = rowStart + xMin * 3;
                for (int k = 0; k < count; k++, p += 3)
                {
                    int w = weights[kOffset + k];
                    r += src[p] * w;
                    g += src[p + 1] * w;
                    b += src[p + 2] * w;
                }
                output[outRow + 3 * x] = Clip8(r);
                output[outRow + 3 * x + 1] = Clip8(g);
                output[outRow + 3 * x + 2] = Clip8(b);
            }
        }
    }

    private static byte Clip8(int fixedPoint)
    {
        int v = fixedPoint >> PrecisionBits;
        return v < 0 ? (byte)0 : v > 255 ? (byte)255 : (byte)v;
    }

    /// <summary>Per output pixel: the first source pixel, the tap count (bounds, interleaved) and the fixed-point
    /// weights (taps per output pixel, zero-padded).</summary>
    internal static (int[] Bounds, int[] Weights, int Taps) Coefficients(int inSize, int outSize, Interpolation filter)
    {
        double support0 = filter == Interpolation.Bicubic ? 2.0 : 1.0;
        double scale = (double)inSize / outSize;
        double filterScale = Math.Max(scale, 1.0);
        double support = support0 * filterScale;
        int taps = (int)Math.Ceiling(support) * 2 + 1;
        var bounds = new int[outSize * 2];
        var weights = new int[outSize * taps];
        var w = new double[taps];
        for (int o = 0; o < outSize; o++)
        {
            double center = (o + 0.5) * scale;
            double inverse = 1.0 / filterScale;
            int min = Math.Max((int)(center - support + 0.5), 0);
            int count = Math.Min((int)(center + support + 0.5), inSize) - min;
            double total = 0;
            for (int k = 0; k < count; k++)
            {
                w[k] = Kernel((k + min - center + 0.5) * inverse, filter);
                total += w[k];
            }
            for (int k = 0; k < count; k++)
            {
                double normalised = total != 0 ? w[k] / total : w[k];
                weights[o * taps + k] = (int)(normalised < 0
                    ? -0.5 + normalised * (1 << PrecisionBits)
                    : 0.5 + normalised * (1 << PrecisionBits));
            }
            bounds[2 * o] = min;
            bounds[2 * o + 1] = count;
        }
        return (bounds, weights, taps);
    }

    private static double Kernel(double x, Interpolation filter)
    {
        x = Math.Abs(x);
        if (filter == Interpolation.Bilinear) return x < 1 ? 1 - x : 0;
        const double a = -0.5;
        if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
        if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
        return 0;
    }
}
