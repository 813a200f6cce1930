using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PolaFormer.Layers;

/// <summary>The official weight initialisation, and a correct truncated normal (TorchSharp 0.107's
/// <c>nn.init.trunc_normal_</c> swaps mean and std in native code and fills every element with the std).</summary>
public static class Initialization
{
    /// <summary>
    /// Fills <paramref name="tensor"/> in place with values from N(mean, std²) truncated to [a, b], by inverse-CDF
    /// sampling as PyTorch's <c>trunc_normal_</c> does. Uses the default torch generator unless one is given.
    /// </summary>
    public static Tensor TruncatedNormal_(Tensor tensor, double std = 0.02, double mean = 0, double a = -2, double b = 2,
        Generator? generator = null)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        Check.Positive(std, nameof(std));
        if (!(a < b)) throw new ArgumentException($"The truncation interval [a={a}, b={b}] is empty; expected a < b.", nameof(a));
        static double NormalCdf(double x) => (1 + Erf(x / Math.Sqrt(2))) / 2;
        double lower = NormalCdf((a - mean) / std), upper = NormalCdf((b - mean) / std);
        using var noGrad = no_grad();
        tensor.uniform_(2 * lower - 1, 2 * upper - 1, generator);
        tensor.erfinv_();
        using var scale = (std * Math.Sqrt(2)).ToScalar();
        using var shift = mean.ToScalar();
        using var low = a.ToScalar();
        using var high = b.ToScalar();
        tensor.mul_(scale);
        tensor.add_(shift, ScalarArithmetic.One);
        tensor.clamp_(low, high);
        return tensor;
    }

    /// <summary>The official <c>_init_weights</c>: every Linear gets truncated-normal(std 0.02) weights and zero
    /// bias; every LayerNorm weight 1, bias 0. Convolutions and other parameters keep their own initialisation.</summary>
    public static void TruncatedNormalLinears(nn.Module module)
    {
        ArgumentNullException.ThrowIfNull(module);
        using var noGrad = no_grad();
        foreach (var m in module.modules())
        {
            switch (m)
            {
                case Linear linear:
                    TruncatedNormal_(linear.weight!, std: 0.02);
                    linear.bias?.zero_();
                    break;
                case LayerNorm layerNorm:
                    layerNorm.weight?.fill_(ScalarArithmetic.One);
                    layerNorm.bias?.zero_();
                    break;
            }
        }
    }

    // .NET has no Math.Erf. This is the Chebyshev fit of erfc from Numerical Recipes (fractional error < 1.2e-7),
    // ample for placing the truncation bounds in [0, 1].
    private static double Erf(double x)
    {
        double t = 1.0 / (1.0 + 0.5 * Math.Abs(x));
        double y = 1 - t * Math.Exp(-x * x - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
            t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
        return x >= 0 ? y : -y;
    }
}
