using FluentAssertions;
using PolaFormer.Attention;
using PolaFormer.Tests.Infrastructure;
using Xunit;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Attention;

/// <summary>The polarity layers divide q and k by softplus(scale) either in the projection's weight (many token rows)
/// or on the activations (few): both give the official numbers, so a batch of copies of one input (folded) must
/// give what the input alone gives (not folded).</summary>
public sealed class QueryKeyScalingTests : TorchTest
{
    public static TheoryData<string> Layers() => new() { "window", "pvt", "pvt-sr" };

    [Theory]
    [MemberData(nameof(Layers))]
    public void Folding_the_scale_into_the_projection_changes_nothing_but_rounding(string kind)
    {
        using var scope = NewDisposeScope();
        manual_seed(4);
        // dim 32: projection weights have 64 (qg, kv) or 128 (qkvg) rows; a 4 × 4 grid has 16 token rows per image.
        TokenAttention layer = kind == "window"
            ? new PolaWindowAttention(32, windowSize: 4, numHeads: 2)
            : new PolaLinearAttention(32, (4, 4), numHeads: 2, qkvBias: true, srRatio: kind == "pvt-sr" ? 2 : 1);
        using (no_grad())
            foreach (var (name, p) in layer.named_parameters())
                if (name is "power" or "scale" or "positional_encoding") p.copy_(randn_like(p));

        var x = randn(1, 16, 32);
        var (single, singleScaleGrad) = Run(layer, x);
        var (batched, batchedScaleGrad) = Run(layer, x.expand(16, 16, 32).contiguous());   // 256 token rows: folded

        batched[0].ShouldBeClose(single[0], 1e-6, "output of the first copy");
        batched[15].ShouldBeClose(single[0], 1e-6, "output of the last copy");
        (batchedScaleGrad / 16).ShouldBeClose(singleScaleGrad, 1e-5, "scale gradient per copy");
    }

    private static (Tensor Output, Tensor ScaleGrad) Run(TokenAttention layer, Tensor x)
    {
        layer.zero_grad();
        var y = layer.forward(x, 4, 4);
        y.sum().backward();
        var scale = layer.named_parameters().Single(p => p.name == "scale").parameter;
        return (y.detach(), scale.grad!.clone());
    }
}
