using FluentAssertions;
using PolaFormer.Layers;
using PolaFormer.Tests.Infrastructure;
using Xunit;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Layers;

/// <summary>The library's BatchNorm2d (made so that no Scalar is left to TorchSharp's finalizer) against TorchSharp's
/// nn.BatchNorm2d, which follows PyTorch's: same state-dict entries, outputs, gradients and running statistics.</summary>
public sealed class BatchNorm2dTests : TorchTest
{
    [Fact]
    public void Matches_TorchSharps_BatchNorm2d_in_training_and_evaluation_entry_for_entry()
    {
        using var ours = new BatchNorm2d(6);
        using var theirs = nn.BatchNorm2d(6);
        ours.state_dict().Select(kv => (kv.Key, Shape: string.Join('x', kv.Value.shape), kv.Value.dtype))
            .Should().Equal(theirs.state_dict().Select(kv => (kv.Key, Shape: string.Join('x', kv.Value.shape), kv.Value.dtype)));
        ours.parameters().Select(p => string.Join('x', p.shape)).Should().Equal(theirs.parameters().Select(p => string.Join('x', p.shape)));
        using (no_grad())
        {
            // Non-trivial affine parameters, the same on both.
            foreach (var (a, b) in ours.parameters().Zip(theirs.parameters()))
            {
                a.copy_(randn(a.shape));
                b.copy_(a);
            }
        }

        for (int step = 0; step < 3; step++)
        {
            var x = randn(4, 6, 5, 7).requires_grad_();
            var xTheirs = x.detach().clone().requires_grad_();
            var y = ours.call(x);
            var yTheirs = theirs.call(xTheirs);
            y.eq(yTheirs).all().item<bool>().Should().BeTrue($"training output, step {step}");
            var upstream = randn(y.shape);
            y.backward([upstream]);
            yTheirs.backward([upstream]);
            x.grad!.eq(xTheirs.grad!).all().item<bool>().Should().BeTrue($"input gradient, step {step}");
            foreach (var ((name, a), (_, b)) in ours.named_parameters().Zip(theirs.named_parameters()))
                a.grad!.eq(b.grad!).all().item<bool>().Should().BeTrue($"{name}.grad, step {step}");
        }
        foreach (var ((name, a), (_, b)) in ours.state_dict().Zip(theirs.state_dict()))
            a.eq(b).all().item<bool>().Should().BeTrue($"{name} after three training steps");
        ours.state_dict()["num_batches_tracked"].item<long>().Should().Be(3);

        ours.eval();
        theirs.eval();
        using (no_grad())
        {
            var x = randn(2, 6, 3, 3);
            ours.call(x).eq(theirs.call(x)).all().item<bool>().Should().BeTrue("evaluation uses the running statistics");
        }
        ours.state_dict()["num_batches_tracked"].item<long>().Should().Be(3, "evaluation counts no batch");
    }

    [Fact]
    public void An_input_of_another_shape_is_named()
    {
        using var norm = new BatchNorm2d(6);
        FluentActions.Invoking(() => norm.call(zeros(2, 5, 3, 3))).Should().Throw<ArgumentException>()
            .WithMessage("x has shape (2, 5, 3, 3); expected (B, C=6, H, W).*");
        FluentActions.Invoking(() => norm.call(zeros(2, 6, 3))).Should().Throw<ArgumentException>()
            .WithMessage("x has shape (2, 6, 3); expected (B, C=6, H, W).*");
    }
}
