using FluentAssertions;
using PolaFormer.Checkpoints;
using PolaFormer.Models;
using PolaFormer.Tests.Infrastructure;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Models;

/// <summary>
/// One contract, checked on every registered model (timm's <c>test_models.py</c> idea): forward and backward,
/// unpooled <see cref="Backbone.ForwardFeatures"/> and <see cref="Backbone.ForwardHead"/>, intermediates matching
/// <see cref="Backbone.FeatureInfo"/> (index selection and early stop), a non-square input, the classifier reset after a
/// dtype change, and a state-dict round trip. Built at 64 × 64 so that even the base presets stay quick.
/// </summary>
public sealed class ModelContractTests : TorchTest
{
    private const int Side = 64;

    public static TheoryData<string> Names()
    {
        var data = new TheoryData<string>();
        foreach (var name in ModelRegistry.Names) data.Add(name);
        return data;
    }

    private static Backbone Build(string name) => ModelRegistry.Create(name, numClasses: 5, imageSize: (Side, Side));

    // The official Pola-PVT keeps a final LayerNorm in its state dict that its classifier never uses.
    private static IEnumerable<string> UnusedParameters(string name) =>
        name.StartsWith("pola_pvt", StringComparison.Ordinal) ? ["norm.weight", "norm.bias"] : [];

    // One method per model: building the base presets dominates the time, so each is built once (and once more for
    // the round trip).
    [Theory]
    [MemberData(nameof(Names))]
    public void Follows_the_model_contract(string name)
    {
        using var model = Build(name);
        ForwardBackwardFeaturesAndHead(model, name);
        IntermediatesFollowFeatureInfo(model);
        ClassifierResetFollowsTheDtypeAndWeightsRoundTrip(model, name);
    }

    private static void ForwardBackwardFeaturesAndHead(Backbone model, string name)
    {
        using var scope = NewDisposeScope();
        var x = randn([2, 3, Side, Side], generator: new Generator(1));
        model.train();
        var logits = model.forward(x);
        logits.shape.Should().Equal(2, 5);
        logits.sum().backward();
        var unused = UnusedParameters(name).ToHashSet();
        model.named_parameters().Where(p => p.parameter.requires_grad && p.parameter.grad is null).Select(p => p.name)
            .Should().BeEquivalentTo(unused, "every other parameter takes part in the loss");
        model.zero_grad();

        model.eval();
        using var noGrad = no_grad();
        var features = model.ForwardFeatures(x);
        features.dim().Should().Be(3);
        features.shape[0].Should().Be(2);
        features.shape[2].Should().Be(model.NumFeatures);
        model.ForwardHead(features).eq(model.forward(x)).all().item<bool>().Should().BeTrue("forward is ForwardHead(ForwardFeatures)");
        model.ForwardHead(features, preLogits: true).shape.Should().Equal(2, model.NumFeatures);
        FluentActions.Invoking(() => model.ForwardHead(features.mean([1])))
            .Should().Throw<ArgumentException>().WithParameterName("features").WithMessage("*unpooled*");
    }

    private static void IntermediatesFollowFeatureInfo(Backbone model)
    {
        model.eval();
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        foreach (var (h, w) in new[] { (Side, Side), (Side, Side + 32) })
        {
            var x = randn([1, 3, h, w], generator: new Generator(2));
            var maps = model.ForwardIntermediates(x);
            maps.Should().HaveCount(model.FeatureInfo.Count);
            for (int i = 0; i < maps.Count; i++)
            {
                var info = model.FeatureInfo[i];
                maps[i].shape.Should().Equal([1, info.Channels, h / info.Reduction, w / info.Reduction], $"{info.Name} at {h} × {w}");
            }
            var last = model.ForwardIntermediates(x, indices: [-1]);
            last.Should().ContainSingle();
            last[0].eq(maps[^1]).all().item<bool>().Should().BeTrue("index −1 is the last entry");
            var first = model.ForwardIntermediates(x, indices: [0], stopEarly: true);
            first[0].eq(maps[0]).all().item<bool>().Should().BeTrue("stopping early changes nothing before the stop");
            var (features, both) = model.ForwardFeaturesAndIntermediates(x, indices: [0, -1]);
            both.Should().HaveCount(2);
            features.eq(model.ForwardFeatures(x)).all().item<bool>().Should().BeTrue();
        }
        FluentActions.Invoking(() => model.ForwardIntermediates(randn(1, 3, Side, Side), indices: [model.FeatureInfo.Count]))
            .Should().Throw<ArgumentOutOfRangeException>().WithParameterName("indices");
    }

    private static void ClassifierResetFollowsTheDtypeAndWeightsRoundTrip(Backbone model, string name)
    {
        model.to(ScalarType.Float64);
        model.ResetClassifier(3);
        model.NumClasses.Should().Be(3);
        model.parameters().Should().OnlyContain(p => p.dtype == ScalarType.Float64, "the new head is made in the model's current dtype");
        model.eval();
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var x = randn([1, 3, Side, Side], dtype: ScalarType.Float64, generator: new Generator(3));
        var y = model.forward(x);
        y.shape.Should().Equal(1, 3);

        // Through a safetensors file up to 20 M parameters; the base presets (up to 98 M, 0.8 GB in float64) load the
        // state dict in memory through the same strict loader, which keeps the suite's disk traffic and time bounded.
        using var copy = ModelRegistry.Create(name, numClasses: 3, imageSize: (Side, Side), dtype: ScalarType.Float64);
        if (model.parameters().Sum(p => p.numel()) <= 20_000_000)
        {
            string path = Path.Combine(Path.GetTempPath(), $"contract-{name}-{Guid.NewGuid():N}.safetensors");
            try
            {
                Checkpoint.Save(model, path);
                Checkpoint.Load(copy, path);
            }
            finally
            {
                File.Delete(path);
            }
        }
        else
        {
            StateDictLoader.Load(copy, model.state_dict());
        }
        copy.eval();
        copy.forward(x).eq(y).all().item<bool>().Should().BeTrue("the saved and loaded weights compute the same logits");
    }

    [Theory]
    [InlineData("pola_pvt_tiny", "block4.0")]
    [InlineData("pola_swin_tiny", "layers.3.blocks.1")]
    [InlineData("pola_vit_tiny", "blocks.11")]
    public void Forward_hooks_on_blocks_and_layers_fire(string name, string blockName)
    {
        // Children are invoked with call(), so TorchSharp's hooks see them as PyTorch's would.
        using var model = ModelRegistry.Create(name, numClasses: 4, imageSize: (Side, Side));
        model.eval();
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var block = model.named_modules().Single(m => m.name == blockName).module as nn.Module<Tensor, long, long, Tensor>;
        block.Should().NotBeNull($"{blockName} is a block");
        var norm = model.named_modules().First(m => m.name.EndsWith("norm1", StringComparison.Ordinal)).module as nn.Module<Tensor, Tensor>;
        long[]? seenBlock = null, seenNorm = null;
        var blockHook = block!.register_forward_hook((_, x, h, w, y) => { seenBlock = y.shape; return y; });
        var normHook = norm!.register_forward_hook((_, x, y) => { seenNorm = y.shape; return y; });
        var features = model.ForwardFeatures(randn(1, 3, Side, Side));
        seenBlock.Should().NotBeNull("the block's forward hook fired");
        seenBlock![^1].Should().Be(features.shape[^1]);
        seenNorm.Should().NotBeNull("a LayerNorm inside a block fired too");
        blockHook.remove();
        normHook.remove();
    }
}
