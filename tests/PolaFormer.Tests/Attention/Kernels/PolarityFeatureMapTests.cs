using FluentAssertions;
using PolaFormer.Attention;
using PolaFormer.Attention.Kernels;
using PolaFormer.Tests.Infrastructure;
using Xunit;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Attention.Kernels;

/// <summary>The fused feature-map kernel against the same map built from LibTorch operators.</summary>
public sealed class PolarityFeatureMapTests : TorchTest
{
    [Theory]
    [InlineData(2, 3, 49, 32)]
    [InlineData(1, 1, 5, 2)]     // narrower than a vector: the scalar tail only
    [InlineData(2, 2, 17, 12)]   // one vector plus a tail
    [InlineData(1, 8, 64, 64)]
    public void Matches_the_operator_version_forward_and_backward(int b, int h, int n, int d)
    {
        using var scope = NewDisposeScope();
        var g = new Generator(5);
        var x = randn(b, h, n, d, generator: g) * 2;
        x[0, 0, 0, 0] = tensor(0f);                                   // exact zeros take neither branch
        var power = 1 + 4 * sigmoid(randn(1, h, 1, d, generator: g));
        var r = randn(b, h, n, 2 * d, generator: g);

        var (y1, gx1, gp1) = Run(x, power, r, PolarityFeatureMap.Apply);
        var (y2, gx2, gp2) = Run(x, power, r, PolarityAttention.SignSplitFeaturesFromOperators);

        PolarityFeatureMap.Supported(x, power).Should().BeTrue();
        y1.ShouldBeClose(y2, 1e-6, "features");
        gx1.ShouldBeClose(gx2, 1e-5, "input gradient");
        gp1.ShouldBeClose(gp2, 1e-5, "power gradient");
        gp1.shape.Should().Equal(power.shape);
    }

    [Theory]
    [InlineData("token-major")]   // the head-split view of a (B, N, heads, d) projection: read in place
    [InlineData("strided")]       // any other layout: copied first
    public void Reads_head_split_views_in_place_and_other_layouts_through_a_copy(string layout)
    {
        using var scope = NewDisposeScope();
        var g = new Generator(7);
        var power = 1 + 4 * sigmoid(randn(1, 3, 1, 8, generator: g));
        var x = layout == "token-major"
            ? randn(2, 11, 3, 8, generator: g).transpose(1, 2)           // (B, heads, N, d), not contiguous
            : randn(2, 3, 8, 11, generator: g).transpose(2, 3);          // last dimension strided
        x.is_contiguous().Should().BeFalse();
        var r = randn(2, 3, 11, 16, generator: g);

        var (y1, gx1, gp1) = Run(x, power, r, PolarityFeatureMap.Apply);
        var (y2, gx2, gp2) = Run(x.contiguous(), power, r, PolarityAttention.SignSplitFeaturesFromOperators);
        y1.ShouldBeClose(y2, 1e-6, "features");
        gx1.ShouldBeClose(gx2, 1e-5, "input gradient");
        gp1.ShouldBeClose(gp2, 1e-5, "power gradient");

        using (no_grad())
            PolarityFeatureMap.Apply(x, power).eq(y1).all().item<bool>().Should().BeTrue("the no-gradient path computes the same bits");
    }

    [Fact]
    public void A_power_shared_by_the_heads_gets_its_summed_gradient()
    {
        using var scope = NewDisposeScope();
        var x = randn(2, 3, 7, 4);
        var power = full(1, 1, 1, 4, 2.5f);
        var r = randn(2, 3, 7, 8);
        var (_, _, gp1) = Run(x, power, r, PolarityFeatureMap.Apply);
        var (_, _, gp2) = Run(x, power, r, PolarityAttention.SignSplitFeaturesFromOperators);
        gp1.shape.Should().Equal(1, 1, 1, 4);
        gp1.ShouldBeClose(gp2, 1e-5, "power gradient summed over heads");
    }

    internal static (Tensor Y, Tensor Gx, Tensor Gp) Run(Tensor x, Tensor power, Tensor r, Func<Tensor, Tensor, Tensor> map)
    {
        var xx = x.detach().clone().requires_grad_(true);
        var pp = power.detach().clone().requires_grad_(true);
        var y = map(xx, pp);
        (y * r).sum().backward();
        return (y.detach(), xx.grad!, pp.grad!);
    }
}

/// <summary>Changes LibTorch's process-wide thread count, so it runs alone.</summary>
[Collection(PolaFormer.Tests.Training.ProcessWideMeasurements.Name)]
public sealed class PolarityFeatureMapThreadTests : TorchTest
{
    [Fact]
    public void Runs_are_bit_identical_whatever_the_thread_count()
    {
        using var scope = NewDisposeScope();
        var x = randn(4, 2, 300, 32);
        var power = 1 + 4 * sigmoid(randn(1, 2, 1, 32));
        var r = randn(4, 2, 300, 64);
        int threads = get_num_threads();
        try
        {
            set_num_threads(1);
            var (_, gx1, gp1) = PolarityFeatureMapTests.Run(x, power, r, PolarityFeatureMap.Apply);
            set_num_threads(2);
            var (_, gx2, gp2) = PolarityFeatureMapTests.Run(x, power, r, PolarityFeatureMap.Apply);
            gx1.eq(gx2).all().item<bool>().Should().BeTrue();
            gp1.eq(gp2).all().item<bool>().Should().BeTrue();
        }
        finally
        {
            set_num_threads(threads);
        }
    }

}
