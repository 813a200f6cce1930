using PolaFormer.Pretrained;
using FluentAssertions;
using PolaFormer.Models;
using PolaFormer.Tests.Infrastructure;
using Xunit;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Models;

public sealed class ModelRegistryTests : TorchTest
{
    [Fact]
    public void Lists_every_family_preset()
    {
        ModelRegistry.Names.Should().Contain(["pola_pvt_tiny", "pola_pvt_small", "pola_pvt_medium", "pola_pvt_large",
            "pola_swin_tiny", "pola_swin_small", "pola_swin_base", "pola_swin_base_384",
            "pola_vit_tiny", "pola_vit_small", "pola_vit_base"]);
    }

    [Fact]
    public void Parameter_counts_match_the_official_listing()
    {
        // statedict_pola_pvt_tiny.json: 12,924,648 parameters.
        ModelRegistry.Describe("pola_pvt_tiny").Parameters.Should().Be(12_924_648);
        ModelRegistry.Describe("pola_pvt_tiny").InputSize.Should().Be((224L, 224L));
        ModelRegistry.Describe("pola_pvt_tiny").ReportedTop1.Should().Be(78.8);
        // statedict_pola_swin_base_384.json: 91,599,304 parameters.
        ModelRegistry.Describe("pola_swin_base_384").Parameters.Should().Be(91_599_304);
        ModelRegistry.Describe("pola_swin_base_384").InputSize.Should().Be((384L, 384L));
    }

    [Fact]
    public void Create_applies_the_overrides()
    {
        using var model = ModelRegistry.Create("pola_pvt_tiny", numClasses: 10, attentionTypes: "LLSS", device: META);
        model.NumClasses.Should().Be(10);
        model.state_dict()["head.weight"].shape.Should().Equal(10, 512);
        model.state_dict().Keys.Should().Contain("block4.0.attn.q.weight", "stage 4 uses softmax attention");
    }

    [Fact]
    public void Unknown_names_list_the_registered_ones()
    {
        FluentActions.Invoking(() => ModelRegistry.Create("pola_resnet50"))
            .Should().Throw<ArgumentException>().WithParameterName("name").WithMessage("*'pola_resnet50'*pola_pvt_tiny*");
    }

    [Fact]
    public void A_family_registered_from_the_test_assembly_is_listed_described_and_built()
    {
        // PatchMeanModel registers itself from a module initializer of this assembly; nothing in src/ names it.
        ModelRegistry.Names.Should().Contain("test_patch_mean");
        ModelRegistry.Describe("test_patch_mean").Family.Should().Be("PatchMean");
        using var model = ModelRegistry.Create("test_patch_mean", numClasses: 7, attentionTypes: "SL");
        model.Should().BeOfType<PatchMeanModel>().Which.Options.AttentionTypes.Should().Be("SL");
        model.forward(TorchSharp.torch.randn(2, 3, 32, 32)).shape.Should().Equal(2, 7);
        FluentActions.Invoking(() => ModelRegistry.Register(new ModelRegistration(
                new ModelInfo("pola_pvt_tiny", "Other", (1, 1), "L", null), (_, _, _) => throw new InvalidOperationException())))
            .Should().Throw<ArgumentException>().WithMessage("*'pola_pvt_tiny' is already registered (PVT)*");
    }

    [Fact]
    public void A_familys_pretrained_configuration_is_found_by_name_without_a_central_table()
    {
        // Declared in PatchMeanFamily.cs only.
        PretrainedConfigs.Names.Should().Contain("test_patch_mean").And.Contain(["pola_pvt_tiny", "pola_swin_tiny"]);
        var config = PretrainedConfigs.Get("test_patch_mean");
        config.Source.Should().Be("https://example.invalid/test_patch_mean.safetensors");
        ImagePreprocessor.ForModel("test_patch_mean").Config.Should().Be(config);
        PretrainedConfigs.Find("pola_swin_tiny")!.InputSize.Should().Be((224L, 224L));
        PretrainedConfigs.Find("pola_pvt_medium").Should().BeNull("the authors release no weights for it");
        FluentActions.Invoking(() => ModelRegistry.Register(new ModelRegistration(
                new ModelInfo("test_mislabelled", "Other", (1, 1), "L", null, new PretrainedConfig { ModelName = "pola_pvt_tiny" }),
                (_, _, _) => throw new InvalidOperationException())))
            .Should().Throw<ArgumentException>().WithMessage("registration.Info.Pretrained.ModelName is 'pola_pvt_tiny'; expected the model's own name 'test_mislabelled'.*");
    }
}
