using FluentAssertions;
using PolaFormer.Attention;
using PolaFormer.Attention.Kernels;
using PolaFormer.Tests.Infrastructure;
using Xunit;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Attention.Kernels;

/// <summary>The fused readout + head merge + residual + gate kernel against the same expression in LibTorch
/// operators.</summary>
public sealed class GatedReadoutTests : TorchTest
{
    private const double Epsilon = 1e-6;

    [Theory]
    [InlineData(2, 3, 49, 32, "contiguous")]
    [InlineData(1, 2, 300, 64, "strided")]    // several token blocks; local and gate as the layers pass them
    [InlineData(2, 1, 5, 6, "strided")]       // half = 3: the scalar tail only
    [InlineData(1, 4, 70, 20, "contiguous")]  // half = 10: one vector plus a tail
    [InlineData(2, 2, 30, 16, "transposed")]
    public void Matches_the_operator_version_forward_and_backward(int b, int h, int n, int d, string layout)
    {
        using var scope = NewDisposeScope();
        var g = new Generator(11);
        var y = randn(b, h, n, d + 2, generator: g);
        // Normalisers are positive sums of features in the layer; keep them away from zero here too.
        y[.., .., .., d / 2] = rand(b, h, n, generator: g) + 0.5;
        y[.., .., .., d + 1] = rand(b, h, n, generator: g) + 0.5;
        var (local, gate) = layout switch
        {
            // rows read in place: a wider tensor's first d channels, and the gate's slice of a projection
            "strided" => (randn(b, h, n, d + 3, generator: g)[.., .., .., ..d], randn(b, n, 4, h * d, generator: g)[.., .., 3, ..]),
            // channels not contiguous: copied first
            "transposed" => (randn(b, h, d, n, generator: g).transpose(2, 3), randn(b, h * d, n, generator: g).transpose(1, 2)),
            _ => (randn(b, h, n, d, generator: g), randn(b, n, h * d, generator: g)),
        };
        var upstream = randn(b, n, h * d, generator: g);

        var fused = Run(y, local, gate, upstream, (yy, ll, gg) => GatedReadout.Apply(yy, ll, gg, Epsilon));
        var reference = Run(y, local, gate, upstream, Operators);

        fused.Output.ShouldBeClose(reference.Output, 1e-6, "output");
        fused.GradY.ShouldBeClose(reference.GradY, 1e-5, "numerator and normaliser gradient");
        fused.GradLocal.ShouldBeClose(reference.GradLocal, 1e-6, "local gradient");
        fused.GradGate.ShouldBeClose(reference.GradGate, 1e-6, "gate gradient");

        using (no_grad())
            GatedReadout.Apply(y, local, gate, Epsilon).eq(fused.Output).all().item<bool>().Should().BeTrue("the no-gradient path computes the same bits");
    }

    [Fact]
    public void Wrong_shapes_are_refused_before_any_memory_is_read()
    {
        using var scope = NewDisposeScope();
        var y = randn(2, 3, 10, 10);
        FluentActions.Invoking(() => GatedReadout.Apply(y, randn(2, 3, 10, 6), randn(2, 10, 24), Epsilon))
            .Should().Throw<ArgumentException>().WithParameterName("local").WithMessage("*expected (B=2, heads=3, N=10, d=8)*");
        FluentActions.Invoking(() => GatedReadout.Apply(y, randn(2, 3, 10, 8), randn(2, 9, 24), Epsilon))
            .Should().Throw<ArgumentException>().WithParameterName("gate").WithMessage("*expected (B=2, N=10, C=24)*");
    }

    [Theory]
    [InlineData(PolarityImplementation.Fast)]
    [InlineData(PolarityImplementation.Reference)]
    public void The_layer_tail_is_the_same_expression_on_every_path(PolarityImplementation implementation)
    {
        using var scope = NewDisposeScope();
        var g = new Generator(3);
        var (q, k, v) = (randn(2, 2, 36, 8, generator: g), randn(2, 2, 36, 8, generator: g), randn(2, 2, 36, 8, generator: g));
        var power = 1 + 4 * sigmoid(randn(1, 2, 1, 8, generator: g));
        var local = randn(2, 2, 36, 8, generator: g);
        var gate = randn(2, 36, 16, generator: g);

        var tail = PolarityAttention.ComputeGated(q, k, v, power, local, gate, Epsilon, implementation, null, PolarityPrecision.Float32Core);
        var attended = PolarityAttention.Compute(q, k, v, power, Epsilon, implementation);
        var expected = (attended + local).transpose(1, 2).reshape(2, 36, 16) * gate;
        tail.ShouldBeClose(expected, 1e-6, "(attention + local) · gate");

        // float64 takes the operator path: the same expression in the other precision agrees too.
        var tail64 = PolarityAttention.ComputeGated(q.to(float64), k.to(float64), v.to(float64), power.to(float64),
            local.to(float64), gate.to(float64), Epsilon, implementation, null, PolarityPrecision.Float32Core);
        tail64.to(float32).ShouldBeClose(expected, 1e-5, "float64 operator path");
    }

    private static Tensor Operators(Tensor y, Tensor local, Tensor gate)
    {
        long b = y.shape[0], h = y.shape[1], n = y.shape[2], half = (y.shape[3] - 2) / 2;
        var streams = y.unflatten(3, 2, half + 1);
        var readout = streams[.., .., .., .., ..(int)half].div(streams[.., .., .., .., (int)half..].add(Epsilon)).flatten(-2);
        return (readout + local).transpose(1, 2).reshape(b, n, h * 2 * half) * gate;
    }

    private static (Tensor Output, Tensor GradY, Tensor GradLocal, Tensor GradGate) Run(Tensor y, Tensor local, Tensor gate,
        Tensor upstream, Func<Tensor, Tensor, Tensor, Tensor> tail)
    {
        // Leaves that keep the given layouts: gradients flow through the views into the leaves.
        var (yy, ll, gg) = (y.detach().clone().requires_grad_(true), local.detach().clone().requires_grad_(true), gate.detach().clone().requires_grad_(true));
        var (yIn, lIn, gIn) = (yy * 1, Same(local, ll), Same(gate, gg));
        var output = tail(yIn, lIn, gIn);
        (output * upstream).sum().backward();
        return (output.detach(), yy.grad!, ll.grad!, gg.grad!);
    }

    /// <summary>leaf, with the strides of <paramref name="layout"/>.</summary>
    private static Tensor Same(Tensor layout, Tensor leaf) =>
        layout.is_contiguous() ? leaf * 1 : empty_strided(layout.shape, layout.stride()).copy_(leaf);
}
