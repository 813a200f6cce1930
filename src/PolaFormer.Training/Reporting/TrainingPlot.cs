using System.Globalization;
using PolaFormer.Checkpoints;
using SkiaSharp;

namespace PolaFormer.Training.Reporting;

/// <summary>
/// Draws <c>training.png</c>: training loss (left) and validation top-1 / top-5 (right) per epoch. Plain SkiaSharp,
/// so it needs no plotting package; text uses DejaVu Sans when the system has it and is left out otherwise.
/// </summary>
public static class TrainingPlot
{
    private const int Width = 1200, Height = 480, Margin = 64;

    /// <summary>Writes the plot of <paramref name="rows"/> to <paramref name="path"/> (PNG), atomically.</summary>
    public static void Write(string path, IReadOnlyList<EpochMetrics> rows, string title)
    {
        using var surface = SKSurface.Create(new SKImageInfo(Width, Height));
        var canvas = surface.Canvas;
        canvas.Clear(SKColors.White);
        using var typeface = LoadTypeface();
        using var font = typeface is null ? null : new SKFont(typeface, 15);
        using var titleFont = typeface is null ? null : new SKFont(typeface, 18);

        if (titleFont is not null) Text(canvas, title, Width / 2f, 26, titleFont, SKTextAlign.Center, SKColors.Black);
        var epochs = rows.Select(r => (double)r.Epoch).ToArray();
        Panel(canvas, font, new SKRect(Margin, 50, Width / 2f - 20, Height - Margin), "training loss", epochs,
            [("train loss", rows.Select(r => r.TrainLoss).ToArray(), new SKColor(0x1f, 0x77, 0xb4))]);
        Panel(canvas, font, new SKRect(Width / 2f + Margin - 10, 50, Width - 30, Height - Margin), "validation accuracy (%)", epochs,
            [("top-1", rows.Select(r => r.ValTop1).ToArray(), new SKColor(0xd6, 0x27, 0x28)),
             ("top-5", rows.Select(r => r.ValTop5).ToArray(), new SKColor(0x2c, 0xa0, 0x2c))]);

        using var image = surface.Snapshot();
        using var data = image.Encode(SKEncodedImageFormat.Png, 100);
        AtomicFile.Write(path, stream => data.SaveTo(stream));
    }

    private static SKTypeface? LoadTypeface()
    {
        foreach (var candidate in new[]
                 {
                     "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/TTF/DejaVuSans.ttf",
                     "/usr/share/fonts/dejavu/DejaVuSans.ttf", "/Library/Fonts/Arial.ttf", @"C:\Windows\Fonts\arial.ttf",
                 })
        {
            if (File.Exists(candidate)) return SKTypeface.FromFile(candidate);
        }
        return null;
    }

    private static void Panel(SKCanvas canvas, SKFont? font, SKRect area, string label, double[] xs,
        (string Name, double[] Values, SKColor Color)[] series)
    {
        using var axis = new SKPaint { Color = SKColors.Black, StrokeWidth = 1, IsAntialias = true, Style = SKPaintStyle.Stroke };
        using var grid = new SKPaint { Color = new SKColor(0xdd, 0xdd, 0xdd), StrokeWidth = 1, Style = SKPaintStyle.Stroke };
        canvas.DrawRect(area, axis);
        if (font is not null) Text(canvas, label, area.MidX, area.Top - 8, font, SKTextAlign.Center, SKColors.Black);
        var finite = series.SelectMany(s => s.Values).Where(double.IsFinite).ToArray();
        if (xs.Length == 0 || finite.Length == 0) return;

        var (xMin, xMax, ticks) = EpochAxis(xs);
        var (yMin, yMax, yTicks) = ValueAxis(finite.Min(), finite.Max());
        float X(double x) => (float)(area.Left + (x - xMin) / (xMax - xMin) * area.Width);
        float Y(double y) => (float)(area.Bottom - (y - yMin) / (yMax - yMin) * area.Height);

        foreach (double y in yTicks)
        {
            canvas.DrawLine(area.Left, Y(y), area.Right, Y(y), grid);
            if (font is not null) Text(canvas, y.ToString("G6", CultureInfo.InvariantCulture), area.Left - 6, Y(y) + 5, font, SKTextAlign.Right, SKColors.DimGray);
        }
        foreach (int x in ticks)
            if (font is not null) Text(canvas, x.ToString(CultureInfo.InvariantCulture), X(x), area.Bottom + 20, font, SKTextAlign.Center, SKColors.DimGray);
        if (font is not null) Text(canvas, "epoch", area.MidX, area.Bottom + 42, font, SKTextAlign.Center, SKColors.Black);

        for (int s = 0; s < series.Length; s++)
        {
            var (name, values, color) = series[s];
            using var line = new SKPaint { Color = color, StrokeWidth = 2.5f, IsAntialias = true, Style = SKPaintStyle.Stroke };
            using var dot = new SKPaint { Color = color, IsAntialias = true, Style = SKPaintStyle.Fill };
            using var path = new SKPath();
            bool started = false;
            for (int i = 0; i < Math.Min(xs.Length, values.Length); i++)
            {
                if (!double.IsFinite(values[i])) continue;
                var p = new SKPoint(X(xs[i]), Y(values[i]));
                if (started) path.LineTo(p); else path.MoveTo(p);
                started = true;
                canvas.DrawCircle(p, 3.5f, dot);
            }
            canvas.DrawPath(path, line);
            if (font is not null)
            {
                float ly = area.Top + 18 + 20 * s;
                canvas.DrawLine(area.Right - 110, ly - 5, area.Right - 85, ly - 5, line);
                Text(canvas, name, area.Right - 78, ly, font, SKTextAlign.Left, SKColors.Black);
            }
        }
    }

    /// <summary>The epoch axis of <paramref name="epochs"/> (not empty): its range, and ticks at whole epochs only,
    /// at most about ten, all within the epochs plotted. A single epoch is centred, with the one tick under it.</summary>
    internal static (double Min, double Max, IReadOnlyList<int> Ticks) EpochAxis(IReadOnlyList<double> epochs)
    {
        double first = epochs.Min(), last = epochs.Max();
        double min = first, max = last;
        if (max - min < 1) { min -= 0.5; max += 0.5; }
        int step = Math.Max(1, (int)Math.Ceiling((last - first) / 10));
        var ticks = new List<int>();
        for (long x = (long)Math.Ceiling(first); x <= last; x += step) ticks.Add((int)x);
        return (min, max, ticks);
    }

    /// <summary>A value axis over [<paramref name="low"/>, <paramref name="high"/>] with round ticks: a step of 1, 2,
    /// 2.5 or 5 × 10ᵏ giving about four intervals, the range widened to whole steps. A single value (one epoch) gets a
    /// range around it of a tenth of its size (at least 0.1).</summary>
    internal static (double Min, double Max, IReadOnlyList<double> Ticks) ValueAxis(double low, double high)
    {
        if (high - low < 1e-9)
        {
            double half = Math.Max(Math.Abs(low) * 0.1, 0.1);
            (low, high) = (low - half, high + half);
        }
        double raw = (high - low) / 4, magnitude = Math.Pow(10, Math.Floor(Math.Log10(raw)));
        double step = new[] { 1, 2, 2.5, 5, 10 }.Select(f => f * magnitude).First(candidate => candidate >= raw * (1 - 1e-9));
        double min = Math.Floor(low / step + 1e-9) * step, max = Math.Ceiling(high / step - 1e-9) * step;
        var ticks = new List<double>();
        for (int i = 0; min + i * step <= max + step * 1e-6; i++) ticks.Add(Math.Round(min + i * step, 12));
        return (min, max, ticks);
    }

    private static void Text(SKCanvas canvas, string text, float x, float y, SKFont font, SKTextAlign align, SKColor color)
    {
        using var paint = new SKPaint { Color = color, IsAntialias = true };
        canvas.DrawText(text, x, y, align, font, paint);
    }
}
