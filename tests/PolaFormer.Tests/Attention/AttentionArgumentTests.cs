using FluentAssertions;
using PolaFormer.Attention;
using PolaFormer.Checkpoints;
using PolaFormer.Tests.Infrastructure;
using Xunit;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Attention;

/// <summary>Bad input gets an ArgumentException naming the argument, the value and the expectation.</summary>
public sealed class AttentionArgumentTests : TorchTest
{
    [Fact]
    public void Dim_not_divisible_by_heads()
    {
        FluentActions.Invoking(() => new PolaWindowAttention(dim: 95, windowSize: 7, numHeads: 3))
            .Should().Throw<ArgumentException>().WithParameterName("dim").WithMessage("*95*not divisible*3*");
        FluentActions.Invoking(() => new SpatialReductionAttention(dim: 10, numHeads: 4))
            .Should().Throw<ArgumentException>().WithParameterName("dim").WithMessage("*10*4*");
    }

    [Fact]
    public void Odd_head_dimension()
    {
        FluentActions.Invoking(() => new PolaLinearAttention(dim: 96, inputResolution: (8, 8), numHeads: 32))
            .Should().Throw<ArgumentException>().WithParameterName("dim").WithMessage("*head dimension of 3*even*");
    }

    [Fact]
    public void Token_count_is_not_height_times_width()
    {
        using var attention = new PolaLinearAttention(64, (8, 8), numHeads: 2);
        using var x = randn(1, 60, 64);
        FluentActions.Invoking(() => attention.forward(x, 8, 8))
            .Should().Throw<ArgumentException>().WithParameterName("x").WithMessage("*N = 60*8 × 8 = 64*");
    }

    [Fact]
    public void Window_is_not_square()
    {
        using var attention = new PolaWindowAttention(32, windowSize: 7, numHeads: 2);
        using var x = randn(1, 56, 32);
        FluentActions.Invoking(() => attention.forward(x, 7, 8))
            .Should().Throw<ArgumentException>().WithMessage("*7 × 8*square*");
    }

    [Fact]
    public void Token_count_that_fits_no_grid_names_the_built_resolution()
    {
        using var window = new PolaWindowAttention(32, windowSize: 7, numHeads: 2);
        using var x = randn(1, 50, 32);
        FluentActions.Invoking(() => window.forward(x))
            .Should().Throw<ArgumentException>().WithParameterName("x").WithMessage("*N = 50*not a square*built for 7 × 7 windows*");
        using var map = new PolaLinearAttention(32, (14, 14), numHeads: 2);
        FluentActions.Invoking(() => map.forward(x))
            .Should().Throw<ArgumentException>().WithMessage("*built for a 14 × 14 token grid*");
    }

    [Fact]
    public void Softmax_window_that_is_not_square()
    {
        using var attention = new WindowAttention(32, windowSize: 7, numHeads: 2);
        using var x = randn(1, 56, 32);
        FluentActions.Invoking(() => attention.forward(x, 7, 8))
            .Should().Throw<ArgumentException>().WithMessage("*7 × 8*square*");
    }

    [Fact]
    public void Wrong_rank_or_channel_count()
    {
        using var attention = new PolaWindowAttention(32, windowSize: 7, numHeads: 2);
        FluentActions.Invoking(() => attention.forward(randn(49, 32), 7, 7))
            .Should().Throw<ArgumentException>().WithParameterName("x").WithMessage("*(49, 32)*expected (B, N, C=32)*");
        FluentActions.Invoking(() => attention.forward(randn(1, 49, 31), 7, 7))
            .Should().Throw<ArgumentException>().WithParameterName("x").WithMessage("*31 channels*C = 32*");
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(-1.0)]
    [InlineData(double.NaN)]
    public void Alpha_must_be_positive(double alpha)
    {
        FluentActions.Invoking(() => new PolaWindowAttention(32, 7, 2, alpha: alpha))
            .Should().Throw<ArgumentOutOfRangeException>().WithParameterName("alpha");
        FluentActions.Invoking(() => new PolaLinearAttention(32, (7, 7), 2, alpha: alpha))
            .Should().Throw<ArgumentOutOfRangeException>().WithParameterName("alpha");
    }

    [Theory]
    [InlineData(4)]
    [InlineData(0)]
    public void Depthwise_kernel_must_be_odd(long kernel)
    {
        FluentActions.Invoking(() => new PolaWindowAttention(32, 7, 2, kernelSize: kernel))
            .Should().Throw<ArgumentOutOfRangeException>().WithParameterName("kernelSize").WithMessage("*odd*");
    }

    [Fact]
    public void Mask_of_the_wrong_shape()
    {
        using var attention = new WindowAttention(32, windowSize: 7, numHeads: 2);
        using var x = randn(4, 49, 32);
        FluentActions.Invoking(() => attention.forward(x, 7, 7, zeros(3, 49, 49)))
            .Should().Throw<ArgumentException>().WithParameterName("mask").WithMessage("*nW = 3*4 windows*");
        FluentActions.Invoking(() => attention.forward(x, 7, 7, paddingMask: ones(4, 48)))
            .Should().Throw<ArgumentException>().WithParameterName("paddingMask");
    }

    [Fact]
    public void State_dict_problems_are_all_listed_in_one_message_and_nothing_is_copied()
    {
        using var attention = new PolaWindowAttention(32, windowSize: 7, numHeads: 2);
        var good = attention.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.clone());
        var bad = new Dictionary<string, Tensor>(good);
        bad.Remove("power");
        bad.Remove("dwc.bias");
        bad["qkvg.weight"] = full(32, 128, 7.0f);  // transposed
        bad["scale"] = full(32, 7.0f);             // would broadcast silently into (1, 1, 32)
        bad["extra.weight"] = zeros(3);
        var before = attention.state_dict()["qkvg.weight"].clone();

        var act = () => StateDictLoader.Load(attention, bad);
        var error = act.Should().Throw<StateDictMismatchException>().Which;
        error.Message.Should().Contain("power").And.Contain("dwc.bias").And.Contain("extra.weight")
            .And.Contain("qkvg.weight expected (128, 32) got (32, 128)").And.Contain("scale expected (1, 1, 32) got (32)");
        error.Report.Missing.Should().BeEquivalentTo("power", "dwc.bias");
        error.Report.Unexpected.Should().BeEquivalentTo("extra.weight");
        error.Report.Mismatched.Select(m => m.Key).Should().BeEquivalentTo("qkvg.weight", "scale");
        attention.state_dict()["qkvg.weight"].eq(before).all().item<bool>().Should().BeTrue("a failed strict load copies nothing");

        var report = StateDictLoader.Load(attention, bad, strict: false);
        report.IsExact.Should().BeFalse();
        attention.state_dict()["scale"].eq(good["scale"]).all().item<bool>().Should().BeTrue("mis-shaped keys are skipped in a non-strict load");
    }
}
