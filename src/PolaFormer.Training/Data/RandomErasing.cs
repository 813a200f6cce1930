namespace PolaFormer.Training.Data;

/// <summary>
/// timm's <c>RandomErasing</c> as the recipe configures it (mode 'pixel', one box): on the normalised CHW image,
/// with probability p, up to 10 tries of an area fraction uniform in [0.02, 1/3] and a log-uniform aspect ratio in
/// [0.3, 1/0.3]; the first box with h &lt; height and w &lt; width is filled with per-pixel N(0, 1) noise.
/// </summary>
internal sealed class RandomErasing(double probability, double minArea = 0.02, double maxArea = 1.0 / 3, double minAspect = 0.3)
{
    public void Apply(Span<float> chw, int channels, int height, int width, SampleRng rng)
    {
        if (rng.NextDouble() > probability) return;
        double area = (double)height * width;
        double logMin = Math.Log(minAspect), logMax = Math.Log(1 / minAspect);
        for (int attempt = 0; attempt < 10; attempt++)
        {
            double targetArea = rng.Uniform(minArea, maxArea) * area;
            double aspect = Math.Exp(rng.Uniform(logMin, logMax));
            int h = (int)Math.Round(Math.Sqrt(targetArea * aspect));
            int w = (int)Math.Round(Math.Sqrt(targetArea / aspect));
            if (w < width && h < height)
            {
                int top = rng.Integer(0, height - h), left = rng.Integer(0, width - w);
                for (int c = 0; c < channels; c++)
                    for (int y = top; y < top + h; y++)
                    {
                        var row = chw.Slice((c * height + y) * width + left, w);
                        for (int x = 0; x < w; x++) row[x] = (float)rng.Normal();
                    }
                return;
            }
        }
    }

    public override string ToString() => FormattableString.Invariant($"RandomErasing(p={probability:0.###}, mode=pixel, count=1)");
}
