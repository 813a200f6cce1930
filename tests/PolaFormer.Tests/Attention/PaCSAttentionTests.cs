using FluentAssertions;
using PolaFormer.Attention;
using PolaFormer.Tests.Infrastructure;
using Xunit;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Attention;

/// <summary>The two formulations of PaCS attention agree beyond the golden case: another width, more heads, a
/// non-square grid, randomised temperatures, forward and backward.</summary>
public sealed class PaCSAttentionTests : TorchTest
{
    [Fact]
    public void Fast_equals_Reference_on_a_non_square_grid_forward_and_backward()
    {
        const long dim = 48, heads = 3, height = 5, width = 7;
        using var reference = new PaCSAttention(dim, heads, PolarityImplementation.Reference, dtype: ScalarType.Float64);
        using var fast = new PaCSAttention(dim, heads, PolarityImplementation.Fast, dtype: ScalarType.Float64);
        using (no_grad())
        {
            var generator = new Generator(5);
            // The temperatures start at zero; random ones make the two streams differ.
            foreach (var (name, p) in reference.named_parameters().Where(p => p.name is "s1" or "s2"))
                p.copy_(randn(p.shape, dtype: p.dtype, generator: generator));
        }
        fast.load_state_dict(reference.state_dict());

        using var scope = NewDisposeScope();
        var x = randn([2, height * width, dim], dtype: ScalarType.Float64, generator: new Generator(6));
        var upstream = randn([2, height * width, dim], dtype: ScalarType.Float64, generator: new Generator(7));
        var xReference = x.clone().requires_grad_(true);
        var xFast = x.clone().requires_grad_(true);
        var yReference = reference.forward(xReference, height, width);
        var yFast = fast.forward(xFast, height, width);
        yFast.ShouldBeClose(yReference, 1e-12, "Fast against Reference output");

        (yReference * upstream).sum().backward();
        (yFast * upstream).sum().backward();
        xFast.grad!.ShouldBeClose(xReference.grad!, 1e-12, "grad.x");
        var fastParameters = fast.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in reference.named_parameters())
            fastParameters[name].grad!.ShouldBeClose(p.grad!, 1e-12, $"grad.{name}");
        reference.named_parameters().Should().HaveCount(8);
    }
}
