using FluentAssertions;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Infrastructure;

/// <summary>The scaled max-abs comparison the golden README prescribes: max|actual − expected| ≤ tol · max|expected|.</summary>
public static class Tolerance
{
    public static double ScaledError(Tensor actual, Tensor expected) => PolaFormer.Golden.ScaledError.Of(actual, expected);

    public static void ShouldBeClose(this Tensor actual, Tensor expected, double tolerance, string what)
    {
        double error = ScaledError(actual, expected);
        double.IsFinite(error).Should().BeTrue($"{what} must be finite");
        error.Should().BeLessThanOrEqualTo(tolerance, $"{what}: scaled max-abs error {error:E3} must be within {tolerance:E1}");
    }
}
