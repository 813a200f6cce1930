using FluentAssertions;
using PolaFormer.Attention;
using PolaFormer.Tests.Infrastructure;
using Xunit;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Attention;

/// <summary>The fast formulation against the literal official op sequence, and the key-mask semantics.</summary>
public sealed class PolarityAttentionTests : TorchTest
{
    public static TheoryData<int, int, int, int, int> Shapes() => new()
    {
        // batch, heads, queries N, keys n, head dim d. (A single key is left out on purpose: each stream is then
        // v times QK/(QK + eps), a constant up to eps, whose gradient is pure rounding noise in either formulation.)
        { 1, 1, 2, 3, 2 },
        { 2, 3, 49, 49, 32 },
        { 1, 2, 64, 16, 8 },
        { 3, 1, 7, 5, 64 },
        { 2, 5, 196, 49, 64 },
    };

    private sealed record Inputs(Tensor Q, Tensor K, Tensor V, Tensor Power, Tensor R) : IDisposable
    {
        public void Dispose()
        {
            foreach (var t in new[] { Q, K, V, Power, R }) t.Dispose();
        }
    }

    private static Inputs Draw(int b, int h, int nq, int nk, int d, ScalarType dtype, long seed)
    {
        var g = new Generator((ulong)seed);
        var power = (1 + 4 * sigmoid(randn(1, h, 1, d, generator: g))).to(dtype);
        return new Inputs(randn(b, h, nq, d, generator: g).to(dtype), randn(b, h, nk, d, generator: g).to(dtype),
            randn(b, h, nk, d, generator: g).to(dtype), power, randn(b, h, nq, d, generator: g).to(dtype));
    }

    private static (Tensor Y, Tensor[] Grads) Run(Inputs x, PolarityImplementation impl, Tensor? keyMask = null)
    {
        var leaves = new[] { x.Q, x.K, x.V, x.Power }.Select(t => t.detach().clone().requires_grad_(true)).ToArray();
        var y = PolarityAttention.Compute(leaves[0], leaves[1], leaves[2], leaves[3], implementation: impl, keyMask: keyMask);
        (y * x.R).sum().backward();
        return (y.detach(), leaves.Select(l => l.grad!.detach()).ToArray());
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Fast_equals_reference_in_float32(int b, int h, int nq, int nk, int d)
    {
        using var scope = NewDisposeScope();
        using var x = Draw(b, h, nq, nk, d, float32, seed: 1000 + nq);
        var (yr, gr) = Run(x, PolarityImplementation.Reference);
        var (yf, gf) = Run(x, PolarityImplementation.Fast);
        yf.ShouldBeClose(yr, 5e-6, "output");
        string[] names = ["q", "k", "v", "power"];
        for (int i = 0; i < 4; i++) gf[i].ShouldBeClose(gr[i], 2e-5, $"grad of {names[i]}");
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Fast_equals_reference_in_float64(int b, int h, int nq, int nk, int d)
    {
        using var scope = NewDisposeScope();
        using var x = Draw(b, h, nq, nk, d, float64, seed: 2000 + nq);
        var (yr, gr) = Run(x, PolarityImplementation.Reference);
        var (yf, gf) = Run(x, PolarityImplementation.Fast);
        yf.ShouldBeClose(yr, 1e-12, "output");
        for (int i = 0; i < 4; i++) gf[i].ShouldBeClose(gr[i], 1e-11, $"gradient {i}");
    }

    [Theory]
    [InlineData(PolarityImplementation.Fast)]
    [InlineData(PolarityImplementation.Reference)]
    public void Masked_keys_are_the_same_as_absent_keys(PolarityImplementation impl)
    {
        using var scope = NewDisposeScope();
        using var x = Draw(2, 2, 9, 9, 8, float64, seed: 7);
        // Image 0 keeps keys 0..5, image 1 keeps every key.
        var mask = ones(2, 9, dtype: float64);
        mask[0, 6..] = zeros(3, dtype: float64);
        var masked = PolarityAttention.Compute(x.Q, x.K, x.V, x.Power, implementation: impl, keyMask: mask);

        var first = PolarityAttention.Compute(x.Q[..1], x.K[..1, .., ..6], x.V[..1, .., ..6], x.Power, implementation: impl);
        var second = PolarityAttention.Compute(x.Q[1..], x.K[1..], x.V[1..], x.Power, implementation: impl);
        masked[..1].ShouldBeClose(first, 1e-12, "image with padding");
        masked[1..].ShouldBeClose(second, 1e-12, "image without padding");
    }

    [Fact]
    public void Output_is_finite_and_zero_keys_give_zero_output()
    {
        using var scope = NewDisposeScope();
        using var x = Draw(1, 1, 4, 4, 4, float32, seed: 3);
        var y = PolarityAttention.Compute(x.Q, zeros_like(x.K), x.V, x.Power);
        // φ(0) = 0: no key carries any feature, so numerator and normaliser are zero and only eps remains.
        y.abs().max().item<float>().Should().Be(0f);
    }

    [Fact]
    public void Odd_head_dimension_is_rejected()
    {
        using var scope = NewDisposeScope();
        var q = randn(1, 1, 4, 3);
        var act = () => PolarityAttention.Compute(q, q, q, ones(1, 1, 1, 3));
        act.Should().Throw<ArgumentException>().WithParameterName("q").WithMessage("*head dimension of q is 3*even*");
    }

    [Fact]
    public void Mismatched_shapes_and_dtypes_are_rejected()
    {
        using var scope = NewDisposeScope();
        var q = randn(2, 2, 4, 8);
        var power = ones(1, 2, 1, 8);
        FluentActions.Invoking(() => PolarityAttention.Compute(q, randn(2, 3, 4, 8), randn(2, 3, 4, 8), power))
            .Should().Throw<ArgumentException>().WithParameterName("k").WithMessage("*(2, 3, 4, 8)*heads=2*");
        FluentActions.Invoking(() => PolarityAttention.Compute(q, q, randn(2, 2, 5, 8), power))
            .Should().Throw<ArgumentException>().WithParameterName("v");
        FluentActions.Invoking(() => PolarityAttention.Compute(q, q, q, ones(1, 3, 1, 8)))
            .Should().Throw<ArgumentException>().WithParameterName("power").WithMessage("*(1, 3, 1, 8)*");
        FluentActions.Invoking(() => PolarityAttention.Compute(q, q.to(float64), q, power))
            .Should().Throw<ArgumentException>().WithParameterName("k").WithMessage("*Float64*");
        FluentActions.Invoking(() => PolarityAttention.Compute(randn(2, 4, 8), q, q, power))
            .Should().Throw<ArgumentException>().WithParameterName("q").WithMessage("*rank 3*");
        FluentActions.Invoking(() => PolarityAttention.Compute(q, q, q, power, keyMask: ones(2, 5)))
            .Should().Throw<ArgumentException>().WithParameterName("keyMask");
    }

    // Non-finite values go where the official op sequence sends them: a NaN or an infinity in one query or one key
    // must leave the same non-finite entries on the Fast path (C# kernels, fused readout) as on the Reference one.
    [Theory]
    [InlineData("q", double.NaN)]
    [InlineData("q", double.PositiveInfinity)]
    [InlineData("q", double.NegativeInfinity)]
    [InlineData("k", double.NaN)]
    [InlineData("v", double.NaN)]
    public void Non_finite_inputs_propagate_alike_on_both_paths(string where, double value)
    {
        using var scope = NewDisposeScope();
        using var x = Draw(2, 2, 49, 49, 16, float32, seed: 77);
        var target = where switch { "q" => x.Q, "k" => x.K, _ => x.V };
        using (no_grad()) target[1, 0, 5, 3] = tensor((float)value);
        using var noGrad = no_grad();
        var reference = PolarityAttention.Compute(x.Q, x.K, x.V, x.Power, implementation: PolarityImplementation.Reference);
        var fast = PolarityAttention.Compute(x.Q, x.K, x.V, x.Power, implementation: PolarityImplementation.Fast);
        var local = randn(2, 2, 49, 16, generator: new Generator(5));
        var gate = randn(2, 49, 32, generator: new Generator(6));
        var gatedReference = PolarityAttention.ComputeGated(x.Q, x.K, x.V, x.Power, local, gate, PolarityAttention.DefaultEpsilon, PolarityImplementation.Reference, null, PolarityPrecision.Float32Core);
        var gatedFast = PolarityAttention.ComputeGated(x.Q, x.K, x.V, x.Power, local, gate, PolarityAttention.DefaultEpsilon, PolarityImplementation.Fast, null, PolarityPrecision.Float32Core);

        long nonFinite = reference.isfinite().logical_not().sum().item<long>();
        nonFinite.Should().BeGreaterThan(0, $"a {value} in {where} reaches the output on the Reference path");
        fast.isfinite().eq(reference.isfinite()).all().item<bool>().Should().BeTrue("Fast must be non-finite exactly where Reference is");
        gatedFast.isfinite().eq(gatedReference.isfinite()).all().item<bool>().Should().BeTrue("the gated readout likewise");
        var finite = reference.isfinite();
        fast.masked_select(finite).ShouldBeClose(reference.masked_select(finite), 5e-6, "the finite entries");
    }
}
