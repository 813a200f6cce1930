using PolaFormer.Attention;

namespace PolaFormer.Golden;

/// <summary>Builds this library's module for a golden case from the official class name and hyper-parameters.</summary>
public static class GoldenModules
{
    public const string SwinPolarity = "models.pola_swin.PolaLinearAttention";
    public const string PvtPolarity = "models.pola_pvt.PolaLinearAttention";
    public const string SwinSoftmax = "models.pola_swin.WindowAttention";
    public const string PvtSoftmax = "models.pola_pvt.Attention";

    /// <summary>Polarity attention (as opposed to softmax): a case both implementations are checked on.</summary>
    public static bool IsPolarity(GoldenCase c) => c.Module is SwinPolarity or PvtPolarity;

    /// <summary>The attention layer of an attention-kind case, and the (height, width) to call it with.</summary>
    public static (TokenAttention Module, long Height, long Width) Attention(GoldenCase c, PolarityImplementation implementation)
    {
        long dim = c.Int("dim"), heads = c.Int("num_heads");
        bool bias = !c.Has("qkv_bias") || c.Flag("qkv_bias");
        switch (c.Module)
        {
            case SwinPolarity:
            {
                long window = SquareWindow(c);
                return (new PolaWindowAttention(dim, window, heads, qkvBias: bias, alpha: c.Real("alpha"),
                    kernelSize: c.Int("kernel_size"), implementation: implementation), window, window);
            }
            case SwinSoftmax:
            {
                long window = SquareWindow(c);
                return (new WindowAttention(dim, window, heads, qkvBias: bias), window, window);
            }
            case PvtPolarity:
            {
                long h = c.Int("H"), w = c.Int("W");
                long patches = c.Has("num_patches") ? c.Int("num_patches") : h * w;
                var grid = patches == h * w ? (h, w) : (Side(patches), Side(patches));
                return (new PolaLinearAttention(dim, grid, heads, qkvBias: bias, srRatio: c.Has("sr_ratio") ? c.Int("sr_ratio") : 1,
                    alpha: c.Real("alpha"), kernelSize: c.Int("kernel_size"), implementation: implementation), h, w);
            }
            case PvtSoftmax:
                return (new SpatialReductionAttention(dim, heads, qkvBias: bias, srRatio: c.Has("sr_ratio") ? c.Int("sr_ratio") : 1),
                    c.Int("H"), c.Int("W"));
            default:
                throw new NotSupportedException($"Golden case {c.Id}: no attention builder for module '{c.Module}'.");
        }
    }

    private static long SquareWindow(GoldenCase c)
    {
        var w = c.Ints("window_size");
        if (w.Length == 2 && w[0] != w[1]) throw new NotSupportedException($"Golden case {c.Id}: window {w[0]}x{w[1]} is not square.");
        return w[0];
    }

    private static long Side(long n) => (long)Math.Round(Math.Sqrt(n));
}
