using static TorchSharp.torch;

namespace PolaFormer.Golden;

/// <summary>The comparison the golden README prescribes: max|actual − expected| / max|expected|, in float64 on the CPU.</summary>
public static class ScaledError
{
    public static double Of(Tensor actual, Tensor expected)
    {
        using var scope = NewDisposeScope();
        var a = actual.detach().to(float64).cpu();
        var e = expected.detach().to(float64).cpu();
        if (!a.shape.SequenceEqual(e.shape))
            throw new ArgumentException(
                $"actual has shape [{string.Join(", ", a.shape)}]; the golden tensor has [{string.Join(", ", e.shape)}].", nameof(actual));
        double maxAbs = (a - e).abs().max().item<double>();
        double scale = e.abs().max().item<double>();
        return scale == 0 ? maxAbs : maxAbs / scale;
    }
}
