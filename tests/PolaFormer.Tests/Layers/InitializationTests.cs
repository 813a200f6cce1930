using FluentAssertions;
using PolaFormer.Attention;
using PolaFormer.Layers;
using PolaFormer.Tests.Infrastructure;
using Xunit;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Layers;

public sealed class InitializationTests : TorchTest
{
    [Fact]
    public void Truncated_normal_with_the_official_arguments_has_std_002()
    {
        using var scope = NewDisposeScope();
        var w = empty(400, 500);
        Initialization.TruncatedNormal_(w, std: 0.02, generator: new Generator(11));
        w.mean().item<float>().Should().BeApproximately(0f, 2e-4f);
        w.std().item<float>().Should().BeApproximately(0.02f, 2e-4f);
        w.unique().output.numel().Should().BeGreaterThan(100_000, "every element is drawn, not filled with a constant");
    }

    [Fact]
    public void Truncated_normal_respects_its_bounds_and_has_the_truncated_std()
    {
        using var scope = NewDisposeScope();
        var w = empty(200_000);
        Initialization.TruncatedNormal_(w, std: 1, mean: 0, a: -1, b: 1, generator: new Generator(12));
        w.min().item<float>().Should().BeGreaterThanOrEqualTo(-1f);
        w.max().item<float>().Should().BeLessThanOrEqualTo(1f);
        // Standard normal truncated to [-1, 1]: variance 1 - 2·φ(1)/(Φ(1) - Φ(-1)) = 0.29112, std 0.53955.
        w.std().item<float>().Should().BeApproximately(0.53955f, 3e-3f);
        w.mean().item<float>().Should().BeApproximately(0f, 5e-3f);
    }

    [Fact]
    public void Attention_layers_start_with_zero_polarity_parameters_and_std_002_linears()
    {
        using var attention = new PolaWindowAttention(96, 7, 3);
        var p = attention.named_parameters().ToDictionary(x => x.name, x => x.parameter);
        foreach (var name in new[] { "power", "scale", "positional_encoding", "qkvg.bias", "proj.bias" })
            p[name].abs().max().item<float>().Should().Be(0f, $"{name} starts at zero");
        p["qkvg.weight"].std().item<float>().Should().BeApproximately(0.02f, 1e-3f);
    }
}
