using FluentAssertions;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Infrastructure;

/// <summary>The scaled max-abs comparison the golden README prescribes: max|actual − expected| ≤ tol · max|expected|.</summary>
public static class Tolerance
{
    public static double ScaledError(Tensor actual, Tensor expected)
    {
        using var scope = NewDisposeScope();
        var a = actual.detach().to(float64).cpu();
        var e = expected.detach().to(float64).cpu();
        a.shape.Should().Equal(e.shape, "shapes must match before values are compared");
        double maxAbs = (a - e).abs().max().item<double>();
        double scale = e.abs().max().item<double>();
        return scale == 0 ? maxAbs : maxAbs / scale;
    }

    public static void ShouldBeClose(this Tensor actual, Tensor expected, double tolerance, string what)
    {
        double error = ScaledError(actual, expected);
        double.IsFinite(error).Should().BeTrue($"{what} must be finite");
        error.Should().BeLessThanOrEqualTo(tolerance, $"{what}: scaled max-abs error {error:E3} must be within {tolerance:E1}");
    }
}
