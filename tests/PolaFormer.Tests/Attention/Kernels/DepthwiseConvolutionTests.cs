using FluentAssertions;
using PolaFormer.Attention.Kernels;
using PolaFormer.Tests.Infrastructure;
using Xunit;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Attention.Kernels;

/// <summary>The C# depthwise convolution against LibTorch's conv2d, forward and every gradient.</summary>
public sealed class DepthwiseConvolutionTests : TorchTest
{
    [Theory]
    [InlineData(2, 32, 7, 7, 5, true)]
    [InlineData(3, 8, 5, 9, 3, true)]
    [InlineData(1, 4, 2, 3, 5, false)]   // kernel larger than the plane
    [InlineData(4, 16, 56, 56, 5, true)]
    [InlineData(1, 3, 1, 1, 7, true)]
    [InlineData(3, 2, 190, 200, 3, true)]  // planes too large to stack: one stack per plane, summed in order
    [InlineData(64, 4, 8, 8, 5, true)]     // 64 small planes per channel in one stack
    public void Matches_conv2d_forward_and_backward(int b, int c, int h, int w, int k, bool withBias)
    {
        using var scope = NewDisposeScope();
        var g = new Generator(42);
        var x = randn(b, c, h, w, generator: g);
        var weight = randn(c, 1, k, k, generator: g);
        var bias = withBias ? randn(c, generator: g) : null;
        var r = randn(b, c, h, w, generator: g);

        var (y1, gx1, gw1, gb1) = Run(x, weight, bias, r, (xx, ww, bb) => DepthwiseConvolution.Apply(xx, ww, bb));
        var (y2, gx2, gw2, gb2) = Run(x, weight, bias, r,
            (xx, ww, bb) => nn.functional.conv2d(xx, ww, bb, padding: [k / 2, k / 2], groups: c));

        DepthwiseConvolution.Supported(x, weight, bias).Should().BeTrue("the C# kernel must be the one under test");
        y1.ShouldBeClose(y2, 1e-6, "output");
        gx1.ShouldBeClose(gx2, 1e-6, "input gradient");
        gw1.ShouldBeClose(gw2, 1e-5, "weight gradient");
        if (withBias) gb1!.ShouldBeClose(gb2!, 1e-5, "bias gradient");
    }

    [Fact]
    public void Takes_a_channels_last_view_as_the_layers_pass_it()
    {
        using var scope = NewDisposeScope();
        var g = new Generator(3);
        var x = randn(2, 6, 5, 8, generator: g).permute(0, 3, 1, 2);   // (B, C, H, W) view of (B, H, W, C)
        x.is_contiguous().Should().BeFalse();
        var weight = randn(8, 1, 5, 5, generator: g);
        var bias = randn(8, generator: g);
        var r = randn(2, 8, 6, 5, generator: g);

        var (y1, gx1, gw1, gb1) = Run(x, weight, bias, r, (xx, ww, bb) => DepthwiseConvolution.Apply(xx, ww, bb));
        var (y2, gx2, gw2, gb2) = Run(x, weight, bias, r,
            (xx, ww, bb) => nn.functional.conv2d(xx, ww, bb, padding: [2, 2], groups: 8));
        y1.ShouldBeClose(y2, 1e-6, "output");
        gx1.ShouldBeClose(gx2, 1e-6, "input gradient");
        gw1.ShouldBeClose(gw2, 1e-5, "weight gradient");
        gb1!.ShouldBeClose(gb2!, 1e-5, "bias gradient");
        using (no_grad())
            DepthwiseConvolution.Apply(x, weight, bias).ShouldBeClose(y2, 1e-6, "output without gradients");
    }

    [Fact]
    public void Other_dtypes_fall_back_to_libtorch()
    {
        using var scope = NewDisposeScope();
        var x = randn(1, 2, 4, 4, dtype: float64);
        var weight = randn(2, 1, 3, 3, dtype: float64);
        DepthwiseConvolution.Supported(x, weight, null).Should().BeFalse();
        DepthwiseConvolution.Apply(x, weight, null).ShouldBeClose(
            nn.functional.conv2d(x, weight, null, padding: [1, 1], groups: 2), 0, "float64 path");
    }

    private static (Tensor Y, Tensor Gx, Tensor Gw, Tensor? Gb) Run(Tensor x, Tensor weight, Tensor? bias, Tensor r,
        Func<Tensor, Tensor, Tensor?, Tensor> conv)
    {
        var xx = x.detach().clone().requires_grad_(true);
        var ww = weight.detach().clone().requires_grad_(true);
        var bb = bias?.detach().clone().requires_grad_(true);
        var y = conv(xx, ww, bb);
        (y * r).sum().backward();
        return (y.detach(), xx.grad!, ww.grad!, bb?.grad);
    }
}
