using FluentAssertions;
using PolaFormer.Models;
using PolaFormer.Tests.Infrastructure;
using Xunit;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Models;

public sealed class PolaVisionTransformerTests : TorchTest
{
    /// <summary>Parameter count derived by hand from the architecture (not from the code under test).</summary>
    private static long ExpectedParameters(long c, long heads, long depth = 12, long patch = 16, long tokens = 196, long classes = 1000, bool classToken = false)
    {
        long hd = c / heads;
        long patchEmbed = 3 * patch * patch * c + c;
        long attention = (c * 2 * c + 2 * c) * 2   // qg, kv
                         + hd * 25 + hd             // dwc, shared by the heads
                         + c + c + tokens * c       // power, scale, positional_encoding
                         + c * c + c;               // proj
        long mlp = c * 4 * c + 4 * c + 4 * c * c + c;
        long block = 2 * c + attention + 2 * c + mlp;
        return patchEmbed + (classToken ? c : 0) + (tokens + (classToken ? 1 : 0)) * c + depth * block + 2 * c + c * classes + classes;
    }

    [Theory]
    [InlineData("pola_vit_tiny", 192, 3)]
    [InlineData("pola_vit_small", 384, 6)]
    public void Presets_have_the_expected_parameter_count(string name, long width, long heads)
    {
        using var model = new PolaVisionTransformer(PolaVitOptions.Presets[name], device: META);
        model.parameters().Sum(p => p.numel()).Should().Be(ExpectedParameters(width, heads));
    }

    [Fact]
    public void Tiny_runs_at_224_and_at_other_sizes()
    {
        using var model = new PolaVisionTransformer(PolaVitOptions.Presets["pola_vit_tiny"]);
        model.eval();
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var logits = model.forward(randn(1, 3, 224, 224));
        logits.shape.Should().Equal(1, 1000);
        logits.isfinite().all().item<bool>().Should().BeTrue();
        var other = model.forward(randn(2, 3, 160, 256));
        other.shape.Should().Equal(2, 1000);
        other.isfinite().all().item<bool>().Should().BeTrue();
        var maps = model.ForwardIntermediates(randn(1, 3, 160, 256), indices: [-1]);
        maps.Should().ContainSingle().Which.shape.Should().Equal(1, 192, 10, 16);
    }

    [Fact]
    public void Class_token_option_adds_one_token_and_reads_it()
    {
        var options = new PolaVitOptions { ImageSize = (64, 64), PatchSize = 16, EmbedDim = 32, NumHeads = 2, Depth = 2, NumClasses = 5, ClassToken = true };
        using var model = new PolaVisionTransformer(options);
        var p = model.named_parameters().ToDictionary(x => x.name, x => x.parameter);
        p["cls_token"].shape.Should().Equal(1, 1, 32);
        p["pos_embed"].shape.Should().Equal(1, 17, 32);
        p["blocks.0.attn.positional_encoding"].shape.Should().Equal(1, 16, 32); // the attention's encoding covers the grid only
        model.NoWeightDecay.Should().BeEquivalentTo("pos_embed", "cls_token");
        model.eval();
        using var scope = NewDisposeScope();
        model.forward(randn(3, 3, 64, 96)).shape.Should().Equal(3, 5);
    }

    [Fact]
    public void Softmax_variant_differs_only_inside_attention()
    {
        var options = new PolaVitOptions { ImageSize = (32, 32), PatchSize = 16, EmbedDim = 16, NumHeads = 2, Depth = 1, NumClasses = 3 };
        using var pola = new PolaVisionTransformer(options);
        using var softmax = new PolaVisionTransformer(options with { AttentionTypes = "S" });
        var outside = (PolaVisionTransformer m) => m.state_dict().Keys.Where(k => !k.Contains(".attn.")).ToList();
        outside(softmax).Should().Equal(outside(pola));
        softmax.state_dict().Keys.Where(k => k.Contains(".attn.")).Should().BeEquivalentTo(
            "blocks.0.attn.q.weight", "blocks.0.attn.q.bias", "blocks.0.attn.kv.weight", "blocks.0.attn.kv.bias",
            "blocks.0.attn.proj.weight", "blocks.0.attn.proj.bias");
    }

    [Fact]
    public void ResetClassifier_replaces_the_head()
    {
        var options = new PolaVitOptions { ImageSize = (32, 32), PatchSize = 16, EmbedDim = 16, NumHeads = 2, Depth = 1, NumClasses = 3 };
        using var model = new PolaVisionTransformer(options);
        model.ResetClassifier(7);
        model.NumClasses.Should().Be(7);
        model.state_dict()["head.weight"].shape.Should().Equal(7, 16);
        model.ResetClassifier(0);
        model.state_dict().Keys.Should().NotContain("head.weight");
        using var scope = NewDisposeScope();
        model.forward(randn(1, 3, 32, 32)).shape.Should().Equal(1, 16);
    }

    [Fact]
    public void Bad_options_and_inputs_are_rejected_with_the_value()
    {
        FluentActions.Invoking(() => new PolaVisionTransformer(new PolaVitOptions { ImageSize = (100, 100) }))
            .Should().Throw<ArgumentException>().WithMessage("*100 × 100*multiples*16*");
        FluentActions.Invoking(() => new PolaVisionTransformer(new PolaVitOptions { AttentionTypes = "X" }))
            .Should().Throw<ArgumentException>().WithMessage("*'X'*'L'*'S'*");
        FluentActions.Invoking(() => new PolaVisionTransformer(new PolaVitOptions { EmbedDim = 96, NumHeads = 32 }))
            .Should().Throw<ArgumentException>().WithMessage("*head dimension of 3*");
        var options = new PolaVitOptions { ImageSize = (32, 32), PatchSize = 16, EmbedDim = 16, NumHeads = 2, Depth = 1 };
        using var model = new PolaVisionTransformer(options);
        FluentActions.Invoking(() => model.forward(randn(1, 1, 32, 32)))
            .Should().Throw<ArgumentException>().WithParameterName("images").WithMessage("*1 channels*C = 3*");
        FluentActions.Invoking(() => model.forward(randn(1, 3, 40, 32)))
            .Should().Throw<ArgumentException>().WithParameterName("images").WithMessage("*40 × 32*16*");
    }
}
