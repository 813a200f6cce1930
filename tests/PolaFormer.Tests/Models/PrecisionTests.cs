using FluentAssertions;
using PolaFormer.Attention;
using PolaFormer.Checkpoints;
using PolaFormer.Models;
using PolaFormer.Tests.Infrastructure;
using PolaFormer.Training.Data;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Models;

/// <summary>bfloat16 and float16: the models follow <c>.to(dtype)</c>, stay close to float32, and the float32 core keeps
/// float16 finite where float32 is.</summary>
public sealed class PrecisionTests : TorchTest
{
    // bfloat16 keeps 8 significant bits (relative step 2^-8 ≈ 0.4%); through a dozen layers the scaled error of
    // the logits stays within a few percent. Measured: see the test output.
    private const double BFloat16Tolerance = 0.05;

    private readonly ITestOutputHelper _output;

    public PrecisionTests(ITestOutputHelper output) => _output = output;

    public static TheoryData<string> ModelCases() => new(GoldenCase.IdsOfKind("model").Where(id => id.StartsWith("bundled/")));

    private static Backbone BuildGolden(GoldenCase c)
    {
        var model = GoldenModels.Create(c, PolarityImplementation.Fast);
        StateDictLoader.Load(model, c.StateDict());
        model.eval();
        return model;
    }

    [Theory]
    [MemberData(nameof(ModelCases))]
    public void BFloat16_forward_stays_close_to_the_float32_golden_output(string caseId)
    {
        using var c = GoldenCase.Open(caseId);
        using var model = BuildGolden(c);
        model.to(bfloat16);
        model.parameters().Should().OnlyContain(p => p.dtype == ScalarType.BFloat16);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var y = model.forward(c["input.x"].to(bfloat16));
        y.dtype.Should().Be(ScalarType.BFloat16);
        double error = Tolerance.ScaledError(y, c["output.y"]);
        _output.WriteLine($"{caseId}: bfloat16 vs float32 golden logits, scaled error {error:E2}");
        error.Should().BeLessThan(BFloat16Tolerance);
    }

    [Theory]
    [InlineData("pola_pvt_tiny")]
    [InlineData("pola_swin_tiny")]
    [InlineData("pola_vit_tiny")]
    public void BFloat16_presets_follow_the_float32_ones(string name)
    {
        manual_seed(3);
        using var model = ModelRegistry.Create(name, numClasses: 10);
        model.eval();
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var x = randn(1, 3, 64, 64);
        var reference = model.forward(x);
        model.to(bfloat16);
        var low = model.forward(x.to(bfloat16));
        double error = Tolerance.ScaledError(low, reference);
        _output.WriteLine($"{name} @64: bfloat16 vs float32 logits, scaled error {error:E2}");
        error.Should().BeLessThan(BFloat16Tolerance);
    }

    [Theory]
    [InlineData(10.0)]
    [InlineData(100.0)]
    public void Float16_with_the_float32_core_is_finite_where_float32_is(double factor)
    {
        using var c = GoldenCase.Open("bundled/attn_pvt_pola_sr1_d64_h1_hw8.safetensors");
        var (module, h, w) = GoldenModules.Attention(c, PolarityImplementation.Fast);
        using var _ = module;
        StateDictLoader.Load(module, c.StateDict());
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var x = c["input.x"] * factor;
        var reference = module.forward(x, h, w);
        reference.isfinite().all().item<bool>().Should().BeTrue("float32 is finite here");

        module.to(float16);
        var mixed = module.forward(x.to(float16), h, w);
        var finite = mixed.isfinite().all().item<bool>();
        ((PolaLinearAttention)module).Precision = PolarityPrecision.InputDtype;
        var pure = module.forward(x.to(float16), h, w);
        _output.WriteLine($"×{factor}: float16 with float32 core finite = {finite}, scaled error {Tolerance.ScaledError(mixed, reference):E2}; " +
                          $"all-float16 core finite = {pure.isfinite().all().item<bool>()}");
        finite.Should().BeTrue("the float32 core keeps float16 finite");
        Tolerance.ScaledError(mixed, reference).Should().BeLessThan(0.05);
    }

    [Fact]
    public void A_bfloat16_training_step_on_the_bundled_digits_lowers_the_loss()
    {
        var splits = Datasets.Open(null);
        var loader = new BatchLoader(splits.Train, ImagePipeline.Eval(splits.Recipe), new BatchLoaderOptions { BatchSize = 32, Shuffle = false, Workers = 1 });
        using var batch = loader.Epoch(0).First();
        manual_seed(11);
        using var model = new PolaPyramidVisionTransformer(new PolaPvtOptions
        {
            ImageSize = (32, 32), EmbedDims = [16, 32, 48, 64], NumHeads = [1, 2, 2, 4], MlpRatios = [2, 2, 2, 2], Depths = [1, 1, 1, 1],
            NumClasses = 10, DropPathRate = 0,
        }, dtype: bfloat16);
        using var optimizer = optim.AdamW(model.parameters(), lr: 2e-3);
        var images = batch.Images.to(bfloat16);
        double Loss()
        {
            using var s = NewDisposeScope();
            using var g = no_grad();
            return nn.functional.cross_entropy(model.forward(images), batch.Labels).to(float32).item<float>();
        }
        double before = Loss();
        for (int step = 0; step < 5; step++)
        {
            using var s = NewDisposeScope();
            var loss = nn.functional.cross_entropy(model.forward(images), batch.Labels);
            optimizer.zero_grad();
            loss.backward();
            optimizer.step();
        }
        double after = Loss();
        _output.WriteLine($"bfloat16 training: loss {before:0.0000} -> {after:0.0000} after 5 steps");
        after.Should().BeLessThan(before);
    }
}
