using System.Collections.Frozen;
using FluentAssertions;
using PolaFormer.Checkpoints;
using PolaFormer.Layers;
using PolaFormer.Models;
using PolaFormer.Tests.Infrastructure;
using TorchSharp.Modules;
using Xunit;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Models;

/// <summary>
/// The conventions every family shares: (height, width) image sizes that may be non-square, one validation pattern
/// (options.Property, the value, the expectation; ParamName "options"), one stochastic-depth rule, an
/// <c>nn.Identity</c> head without classes, frozen preset dictionaries.
/// </summary>
public sealed class OptionsStyleTests : TorchTest
{
    public static TheoryData<string> Names()
    {
        var data = new TheoryData<string>();
        foreach (var name in ModelRegistry.Names) data.Add(name);
        return data;
    }

    public static TheoryData<string> LibraryNames()
    {
        var data = new TheoryData<string>();
        foreach (var info in ModelRegistry.Models)
            if (info.Family is PolaPyramidVisionTransformer.FamilyName or PolaSwinTransformer.FamilyName
                or PolaVisionTransformer.FamilyName or PolaPlusPlus.FamilyName)
                data.Add(info.Name);
        return data;
    }

    [Theory]
    [MemberData(nameof(Names))]
    public void Every_family_builds_at_a_non_square_size(string name)
    {
        using var model = ModelRegistry.Create(name, numClasses: 3, imageSize: (64, 96), device: META);
        model.ImageSize.Should().Be((64L, 96L));
    }

    [Theory]
    [MemberData(nameof(LibraryNames))]
    public void Every_family_takes_its_stochastic_depth_from_the_one_rule(string name)
    {
        using var model = ModelRegistry.Create(name, dropPathRate: 0.3, device: META);
        int totalBlocks = model switch
        {
            PolaPyramidVisionTransformer m => (int)m.Options.Depths.Sum(),
            PolaSwinTransformer m => (int)m.Options.Depths.Sum(),
            PolaVisionTransformer m => (int)m.Options.Depth,
            PolaPlusPlus m => (int)m.Options.Depths.Sum(),
            _ => throw new InvalidOperationException(name),
        };
        // One DropPath per block, in block order; some families leave it out where the rate is 0 (the first block).
        var rates = model.modules().OfType<DropPath>().Select(d => d.Probability).Where(p => p > 0).ToArray();
        rates.Should().Equal(DropPath.LinearSchedule(0.3, totalBlocks).Where(p => p > 0));
        rates[^1].Should().Be((double)0.3f);
    }

    [Theory]
    [MemberData(nameof(Names))]
    public void No_classifier_is_an_identity_head(string name)
    {
        using var model = ModelRegistry.Create(name, numClasses: 0, imageSize: (64, 64), device: META);
        Head(model).Should().BeOfType<Identity>();
        model.state_dict().Keys.Should().NotContain(k => k.StartsWith("head.", StringComparison.Ordinal));
        model.ResetClassifier(4);
        Head(model).Should().NotBeOfType<Identity>();
        model.ResetClassifier(0);
        Head(model).Should().BeOfType<Identity>();
        model.NumClasses.Should().Be(0);
    }

    [Fact]
    public void Every_family_validates_its_options_the_same_way()
    {
        static void Rejects(Action validate, Action build, string message)
        {
            // The message, then ArgumentException's " (Parameter 'options')".
            FluentActions.Invoking(validate).Should().Throw<ArgumentException>().WithParameterName("options").WithMessage(message + " (Parameter*");
            FluentActions.Invoking(build).Should().Throw<ArgumentException>().WithParameterName("options").WithMessage(message + " (Parameter*");
        }

        var pvt = new PolaPvtOptions { ImageSize = (224, 222) };
        Rejects(() => pvt.Validate(), () => new PolaPyramidVisionTransformer(pvt, device: META),
            "options.ImageSize is 224 × 222; expected a positive height and width, both multiples of 4 (options.PatchSize = 4).");
        var swin = new PolaSwinOptions { ImageSize = (224, 240) };
        Rejects(() => swin.Validate(), () => new PolaSwinTransformer(swin, device: META),
            "options.ImageSize is 224 × 240; expected a positive height and width, both multiples of 32 (options.PatchSize = 4 × 2^3 for the patch mergings between the 4 stages).");
        var vit = new PolaVitOptions { ImageSize = (224, 200) };
        Rejects(() => vit.Validate(), () => new PolaVisionTransformer(vit, device: META),
            "options.ImageSize is 224 × 200; expected a positive height and width, both multiples of 16 (options.PatchSize = 16).");
        var plusPlus = new PolaPlusPlusOptions { ImageSize = (0, 224) };
        Rejects(() => plusPlus.Validate(), () => new PolaPlusPlus(plusPlus, device: META),
            "options.ImageSize is 0 × 224; expected a positive height and width.");

        foreach (var (validate, build) in new (Action, Action)[]
        {
            (() => new PolaPvtOptions { DropPathRate = 1 }.Validate(), () => new PolaPyramidVisionTransformer(new PolaPvtOptions { DropPathRate = 1 }, device: META)),
            (() => new PolaSwinOptions { DropPathRate = 1 }.Validate(), () => new PolaSwinTransformer(new PolaSwinOptions { DropPathRate = 1 }, device: META)),
            (() => new PolaVitOptions { DropPathRate = 1 }.Validate(), () => new PolaVisionTransformer(new PolaVitOptions { DropPathRate = 1 }, device: META)),
            (() => new PolaPlusPlusOptions { DropPathRate = 1 }.Validate(), () => new PolaPlusPlus(new PolaPlusPlusOptions { DropPathRate = 1 }, device: META)),
        })
            Rejects(validate, build, "options.DropPathRate is 1; expected a probability in [0, 1).");

        FluentActions.Invoking(() => new PolaVitOptions { NumClasses = -1 }.Validate("vit"))
            .Should().Throw<ArgumentException>().WithParameterName("vit").WithMessage("vit.NumClasses is -1; expected 0 (no classifier) or more. (Parameter 'vit')");
    }

    [Fact]
    public void Defaults_and_presets_are_valid_and_presets_are_frozen()
    {
        new PolaPvtOptions().Validate();
        new PolaSwinOptions().Validate();
        new PolaVitOptions().Validate();
        new PolaPlusPlusOptions().Validate();
        foreach (var o in PolaPvtOptions.Presets.Values) o.Validate();
        foreach (var o in PolaSwinOptions.Presets.Values) o.Validate();
        foreach (var o in PolaVitOptions.Presets.Values) o.Validate();
        foreach (var o in PolaPlusPlusOptions.Presets.Values) o.Validate();

        PolaPvtOptions.Presets.Should().BeAssignableTo<FrozenDictionary<string, PolaPvtOptions>>();
        PolaSwinOptions.Presets.Should().BeAssignableTo<FrozenDictionary<string, PolaSwinOptions>>();
        PolaVitOptions.Presets.Should().BeAssignableTo<FrozenDictionary<string, PolaVitOptions>>();
        PolaPlusPlusOptions.Presets.Should().BeAssignableTo<FrozenDictionary<string, PolaPlusPlusOptions>>();
    }

    [Fact]
    public void Pola_pvt_lays_its_positional_embeddings_out_on_a_non_square_grid()
    {
        var options = new PolaPvtOptions
        {
            ImageSize = (64, 96), NumClasses = 10, EmbedDims = [8, 16, 32, 64], NumHeads = [1, 2, 4, 8], Depths = [1, 1, 1, 1],
            DropPathRate = 0, LinearSrRatios = "8421",
        };
        using var model = new PolaPyramidVisionTransformer(options);
        model.eval();
        model.get_parameter("pos_embed1")!.shape.Should().Equal(1, 16 * 24, 8);
        model.get_parameter("pos_embed4")!.shape.Should().Equal(1, 2 * 3, 64);
        model.get_parameter("block1.0.attn.positional_encoding")!.shape.Should().Equal([1, 2 * 3, 8], "16 × 24 reduced by 8");
        model.PositionEmbedding(0, 16, 24).Should().BeSameAs(model.get_parameter("pos_embed1"), "the built grid is used as it is");
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        model.forward(randn(2, 3, 64, 96)).shape.Should().Equal(2, 10);
        model.forward(randn(1, 3, 96, 64)).shape.Should().Equal(1, 10);
    }

    [Fact]
    public void Pola_swin_built_non_square_computes_what_the_run_time_layout_computes()
    {
        // The stored masks and windows of a model built for 64 × 96 are those the run-time rule gives a model built
        // for 64 × 64 and run at 64 × 96: same weights, same output.
        var options = new PolaSwinOptions
        {
            ImageSize = (64, 64), NumClasses = 10, EmbedDim = 8, Depths = [2, 2, 2, 2], NumHeads = [1, 2, 4, 8], WindowSize = 8,
            DropPathRate = 0, AttentionTypes = "LLSS",
        };
        using var square = new PolaSwinTransformer(options);
        using var wide = new PolaSwinTransformer(options with { ImageSize = (64, 96) });
        var report = StateDictLoader.Load(wide, square.state_dict(), strict: false);
        report.Missing.Concat(report.Unexpected).Concat(report.Mismatched.Select(m => m.Key))
            .Should().OnlyContain(k => k.EndsWith("attn_mask", StringComparison.Ordinal));
        wide.DescribeBlocks().First().Should().Be("layers.0.blocks.0:L:res16x24:w8:s0");
        square.eval();
        wide.eval();
        using var noGrad = no_grad();
        using var x = randn(2, 3, 64, 96);
        using var expected = square.forward(x);
        using var actual = wide.forward(x);
        actual.ShouldBeClose(expected, 1e-6, "built for 64 × 96 vs built for 64 × 64, both run at 64 × 96");
    }

    private static object Head(Backbone model) => model.named_children().Single(c => c.name == "head").module;
}
