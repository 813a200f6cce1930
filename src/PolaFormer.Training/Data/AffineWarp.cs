namespace PolaFormer.Training.Data;

/// <summary>
/// PIL's <c>Image.transform(size, AFFINE, (a, b, c, d, e, f))</c>, which timm's rotate, shear and translate ops call:
/// output pixel (x, y) samples the input at (a·x' + b·y' + c, d·x' + e·y' + f) with x' = x + ½, y' = y + ½; samples
/// outside the input take the fill colour; inside, PIL's 4×4 cubic (or 2×2 linear) with edge-clamped neighbours,
/// clipped and truncated to 8 bits.
/// </summary>
internal static class AffineWarp
{
    public static RgbImage Transform(RgbImage image, double a, double b, double c, double d, double e, double f,
        (byte R, byte G, byte B) fill, Interpolation filter)
    {
        int w = image.Width, h = image.Height;
        var output = new RgbImage(w, h, fill.R, fill.G, fill.B);
        for (int y = 0; y < h; y++)
        {
            double yc = y + 0.5;
            for (int x = 0; x < w; x++)
            {
                double xc = x + 0.5;
                double xin = a * xc + b * yc + c;
                double yin = d * xc + e * yc + f;
                if (xin < 0 || xin >= w || yin < 0 || yin >= h) continue;
                int o = (y * w + x) * 3;
                if (filter == Interpolation.Bicubic) Bicubic(image, xin - 0.5, yin - 0.5, output.Pixels, o);
                else Bilinear(image, xin - 0.5, yin - 0.5, output.Pixels, o);
            }
        }
        return output;
    }

    /// <summary>PIL <c>Image.rotate(degrees)</c> (counter-clockwise about the centre, same size).</summary>
    public static RgbImage Rotate(RgbImage image, double degrees, (byte, byte, byte) fill, Interpolation filter)
    {
        degrees %= 360.0;
        if (degrees < 0) degrees += 360.0;
        if (degrees == 0) return image.Clone();
        double angle = -degrees * Math.PI / 180.0;
        double cos = Math.Round(Math.Cos(angle), 15), sin = Math.Round(Math.Sin(angle), 15);
        double cx = image.Width / 2.0, cy = image.Height / 2.0;
        // Output → input: rotate about the centre.
        double c = cos * -cx + sin * -cy + cx;
        double f = -sin * -cx + cos * -cy + cy;
        return Transform(image, cos, sin, c, -sin, cos, f, fill, filter);
    }

    public static RgbImage ShearX(RgbImage image, double factor, (byte, byte, byte) fill, Interpolation filter) =>
        Transform(image, 1, factor, 0, 0, 1, 0, fill, filter);

    public static RgbImage ShearY(RgbImage image, double factor, (byte, byte, byte) fill, Interpolation filter) =>
        Transform(image, 1, 0, 0, factor, 1, 0, fill, filter);

    /// <summary>Shifts the content by −dx, −dy pixels (PIL's matrix convention: the output samples the input at +dx).</summary>
    public static RgbImage Translate(RgbImage image, double dx, double dy, (byte, byte, byte) fill, Interpolation filter) =>
        Transform(image, 1, 0, dx, 0, 1, dy, fill, filter);

    private static void Bicubic(RgbImage image, double x, double y, byte[] output, int o)
    {
        int w = image.Width, h = image.Height;
        var p = image.Pixels;
        int x0 = (int)Math.Floor(x), y0 = (int)Math.Floor(y);
        double dx = x - x0, dy = y - y0;
        x0--;
        y0--;
        int c0 = Math.Clamp(x0, 0, w - 1) * 3, c1 = Math.Clamp(x0 + 1, 0, w - 1) * 3;
        int c2 = Math.Clamp(x0 + 2, 0, w - 1) * 3, c3 = Math.Clamp(x0 + 3, 0, w - 1) * 3;
        // Rows: the first clamped into the image, each later one outside the image repeats the one before (PIL).
        int r0 = Math.Clamp(y0, 0, h - 1);
        int r1 = y0 + 1 >= 0 && y0 + 1 < h ? y0 + 1 : -1;
        int r2 = y0 + 2 >= 0 && y0 + 2 < h ? y0 + 2 : -1;
        int r3 = y0 + 3 >= 0 && y0 + 3 < h ? y0 + 3 : -1;
        for (int ch = 0; ch < 3; ch++)
        {
            double v1 = Row(p, r0 * w * 3 + ch, c0, c1, c2, c3, dx);
            double v2 = r1 >= 0 ? Row(p, r1 * w * 3 + ch, c0, c1, c2, c3, dx) : v1;
            double v3 = r2 >= 0 ? Row(p, r2 * w * 3 + ch, c0, c1, c2, c3, dx) : v2;
            double v4 = r3 >= 0 ? Row(p, r3 * w * 3 + ch, c0, c1, c2, c3, dx) : v3;
            double v = Cubic(v1, v2, v3, v4, dy);
            output[o + ch] = v <= 0 ? (byte)0 : v >= 255 ? (byte)255 : (byte)v;
        }
    }

    private static double Row(byte[] p, int rowStart, int c0, int c1, int c2, int c3, double d) =>
        Cubic(p[rowStart + c0], p[rowStart + c1], p[rowStart + c2], p[rowStart + c3], d);

    /// <summary>PIL Geometry.c's cubic through four samples (a = −1 convolution), evaluated between the middle two.</summary>
    private static double Cubic(double v1, double v2, double v3, double v4, double d)
    {
        double p1 = v2;
        double p2 = -v1 + v3;
        double p3 = 2 * (v1 - v2) + v3 - v4;
        double p4 = -v1 + v2 - v3 + v4;
        return p1 + d * (p2 + d * (p3 + d * p4));
    }

    private static void Bilinear(RgbImage image, double x, double y, byte[] output, int o)
    {
        int w = image.Width, h = image.Height;
        var p = image.Pixels;
        int x0 = (int)Math.Floor(x), y0 = (int)Math.Floor(y);
        double dx = x - x0, dy = y - y0;
        int c0 = Math.Clamp(x0, 0, w - 1) * 3, c1 = Math.Clamp(x0 + 1, 0, w - 1) * 3;
        int r0 = Math.Clamp(y0, 0, h - 1) * w * 3;
        int r1 = y0 + 1 >= 0 && y0 + 1 < h ? (y0 + 1) * w * 3 : -1;
        for (int ch = 0; ch < 3; ch++)
        {
            double v1 = p[r0 + c0 + ch] + (p[r0 + c1 + ch] - p[r0 + c0 + ch]) * dx;
            double v2 = r1 >= 0 ? p[r1 + c0 + ch] + (p[r1 + c1 + ch] - p[r1 + c0 + ch]) * dx : v1;
            output[o + ch] = (byte)(v1 + (v2 - v1) * dy);
        }
    }
}
