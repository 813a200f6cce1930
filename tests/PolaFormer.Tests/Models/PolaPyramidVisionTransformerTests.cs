using System.Globalization;
using System.Text.Json;
using FluentAssertions;
using PolaFormer.Attention;
using PolaFormer.Checkpoints;
using PolaFormer.Models;
using PolaFormer.Tests.Infrastructure;
using TorchSharp;
using TorchSharp.Modules;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Models;

/// <summary>
/// Pola-PVT against the official <c>models.pola_pvt.PyramidVisionTransformer</c>: every golden model file (bundled
/// and POLAFORMER_GOLDEN_DIR) in float32 and float64, the released state-dict listings, and the behaviour beyond
/// the official code (any input size, resized positional embeddings and their cache).
/// </summary>
public sealed class PolaPyramidVisionTransformerTests : TorchTest
{
    private const string OfficialModule = "models.pola_pvt.PyramidVisionTransformer";
    private const double Float32Tolerance = 1e-5;
    private const double Float64Tolerance = 1e-10;

    private readonly ITestOutputHelper _output;

    public PolaPyramidVisionTransformerTests(ITestOutputHelper output) => _output = output;

    /// <summary>A small model: 8..64 channels, one block per stage, k/v reduced to 2 × 2 at 64 × 64 in L stages.</summary>
    private static PolaPvtOptions Small(string attentionTypes = "LLLL", string linearSrRatios = "8421") => new()
    {
        ImageSize = (64, 64),
        NumClasses = 10,
        EmbedDims = [8, 16, 32, 64],
        NumHeads = [1, 2, 4, 8],
        Depths = [1, 1, 1, 1],
        DropPathRate = 0,
        AttentionTypes = attentionTypes,
        LinearSrRatios = linearSrRatios,
    };

    // ---------------------------------------------------------------- golden model files

    public static TheoryData<string, PolarityImplementation> GoldenCases()
    {
        var data = new TheoryData<string, PolarityImplementation>();
        foreach (var id in PvtCaseIds())
        {
            data.Add(id, PolarityImplementation.Fast);
            data.Add(id, PolarityImplementation.Reference);
        }
        return data;
    }

    public static TheoryData<string> GoldenFloat64Cases()
    {
        var data = new TheoryData<string>();
        foreach (var id in PvtCaseIds())
        {
            using var c = GoldenCase.Open(id);
            if (c.Float64 is not null) data.Add(id);
        }
        return data;
    }

    private static IEnumerable<string> PvtCaseIds() => GoldenCase.IdsOfKind("model").Where(id =>
    {
        using var c = GoldenCase.Open(id);
        return c.Module == OfficialModule;
    }).ToList();

    [Fact]
    public void The_bundled_pvt_model_case_is_found_and_has_a_float64_companion()
    {
        var bundled = PvtCaseIds().Where(id => id.StartsWith("bundled/", StringComparison.Ordinal)).ToList();
        bundled.Should().ContainSingle().Which.Should().Contain("model_pola_pvt_img64_e8_LLLL_sr8421");
        using var c = GoldenCase.Open(bundled[0]);
        c.Float64.Should().NotBeNull();
    }

    [Theory]
    [MemberData(nameof(GoldenCases))]
    public void Matches_the_official_float32_outputs_and_intermediates(string caseId, PolarityImplementation implementation)
    {
        using var c = GoldenCase.Open(caseId);
        using var model = BuildGolden(c, implementation);
        var worst = CompareWithGolden(model, c["input.x"], c.Tensors, Float32Tolerance, caseId);
        _output.WriteLine($"GOLDEN {caseId} [{implementation}] float32: {worst}");
    }

    [Theory]
    [MemberData(nameof(GoldenFloat64Cases))]
    public void Matches_the_official_float64_reference(string caseId)
    {
        using var c = GoldenCase.Open(caseId);
        using var model = BuildGolden(c, PolarityImplementation.Fast);
        model.to(float64);
        using var x = c["input.x"].to(float64);
        var worst = CompareWithGolden(model, x, c.Float64!.Tensors, Float64Tolerance, caseId + " (float64)");
        _output.WriteLine($"GOLDEN {caseId} float64: {worst}");
    }

    private static PolaPyramidVisionTransformer BuildGolden(GoldenCase c, PolarityImplementation implementation)
    {
        c.Text("num_stages").Should().Be("4");
        var eps = GoldenModels.LayerNormEps(c);
        var options = GoldenModels.PvtOptions(c, implementation);
        var model = new PolaPyramidVisionTransformer(options);

        // Every LayerNorm the official model has, with its epsilon (patch embeddings and sr norms 1e-5, blocks 1e-6).
        var layerNorms = model.named_modules().Where(m => m.module is LayerNorm)
            .ToDictionary(m => m.name, m => ((LayerNorm)m.module).eps);
        layerNorms.Should().BeEquivalentTo(eps, "the model has exactly the official LayerNorms with the official epsilons");
        if (c.Has("num_parameters"))
            model.parameters().Sum(p => p.numel()).Should().Be(c.Int("num_parameters"));

        StateDictLoader.Load(model, c.StateDict(), strict: true, sourceName: c.Id);
        model.eval();
        return model;
    }

    /// <summary>Runs the model on x and compares output.y, output.features and every inter.* of
    /// <paramref name="expected"/>; returns the worst scaled error per tensor group.</summary>
    private static string CompareWithGolden(PolaPyramidVisionTransformer model, Tensor x,
        IReadOnlyDictionary<string, Tensor> expected, double tolerance, string what)
    {
        var captured = new Dictionary<string, Tensor>();
        var expectedInter = expected.Keys.Where(k => k.StartsWith("inter.", StringComparison.Ordinal)).ToList();
        var capture = IntermediateCapture.Attach(model, expectedInter.Select(k => k["inter.".Length..]), (name, t) =>
        {
            captured.Should().NotContainKey("inter." + name, "every module reports once per forward");
            captured["inter." + name] = t.detach().clone().DetachFromDisposeScope();
        });
        try
        {
            using var noGrad = no_grad();
            using var scope = NewDisposeScope();
            var tokens = model.ForwardFeatures(x);
            capture.Dispose();
            var y = model.ForwardHead(tokens);
            var features = model.ForwardHead(tokens, preLogits: true);   // the golden output.features are pooled
            captured.Keys.Should().BeEquivalentTo(expectedInter, "the forward hooks report exactly the golden intermediates");

            y.ShouldBeClose(expected["output.y"], tolerance, $"{what} output.y");
            features.ShouldBeClose(expected["output.features"], tolerance, $"{what} output.features");
            double worstInter = 0;
            string worstName = "";
            foreach (var name in expectedInter)
            {
                captured[name].ShouldBeClose(expected[name], tolerance, $"{what} {name}");
                double e = Tolerance.ScaledError(captured[name], expected[name]);
                if (e >= worstInter) (worstInter, worstName) = (e, name);
            }
            return FormattableString.Invariant(
                $"output.y {Tolerance.ScaledError(y, expected["output.y"]):E2}, output.features {Tolerance.ScaledError(features, expected["output.features"]):E2}, worst inter {worstName} {worstInter:E2}");
        }
        finally
        {
            capture.Dispose();
            foreach (var t in captured.Values) t.Dispose();
        }
    }

    // ---------------------------------------------------------------- state-dict listings of the released models

    public static TheoryData<string> Listings() => new()
    {
        "statedict_pola_pvt_tiny.json",
        "statedict_pola_pvt_tiny_la8421.json",
        "statedict_pola_pvt_small.json",
        "statedict_pola_pvt_medium.json",
        "statedict_pola_pvt_large.json",
    };

    [Theory]
    [MemberData(nameof(Listings))]
    public void Has_the_official_state_dict(string file)
    {
        using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(GoldenCase.BundledFolder, file)));
        var root = json.RootElement;
        var ctor = root.GetProperty("constructor_args");
        var options = PolaPvtOptions.Presets[ctor.GetProperty("factory").GetString()!] with
        {
            DropPathRate = ctor.GetProperty("drop_path_rate").GetDouble(),
            Alpha = ctor.GetProperty("alpha").GetDouble(),
            KernelSize = ctor.GetProperty("kernel_size").GetInt64(),
            AttentionTypes = ctor.GetProperty("attn_type").GetString()!,
            LinearSrRatios = ctor.GetProperty("la_sr_ratios").GetString()!,
        };
        if (file == "statedict_pola_pvt_tiny.json")
            options.Should().BeEquivalentTo(new PolaPvtOptions(), "the defaults are pola_pvt_tiny as main.py builds it");

        using var model = new PolaPyramidVisionTransformer(options);
        OfficialStateDict.ShouldMatch(model, root);
    }

    [Fact]
    public void Presets_are_the_released_configurations()
    {
        PolaPvtOptions.Presets.Keys.Should().BeEquivalentTo("pola_pvt_tiny", "pola_pvt_small", "pola_pvt_medium", "pola_pvt_large");
        PolaPvtOptions.Presets["pola_pvt_large"].Depths.Should().Equal(3, 8, 27, 3);
        PolaPvtOptions.Presets.Values.Should().OnlyContain(o =>
            o.ImageSize.Height == 224 && o.ImageSize.Width == 224 && o.LinearSrRatios == "1111" && o.AttentionTypes == "LLLL" && o.DropPathRate == 0.1 &&
            o.BlockNormEps == 1e-6 && o.MlpRatios.SequenceEqual(new double[] { 8, 8, 4, 4 }));
    }

    // ---------------------------------------------------------------- any input size

    [Fact]
    public void Tiny_classifies_a_224_image()
    {
        using var model = new PolaPyramidVisionTransformer(PolaPvtOptions.Presets["pola_pvt_tiny"]);
        model.eval();
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var y = model.forward(randn(1, 3, 224, 224));
        y.shape.Should().Equal(1, 1000);
        isfinite(y).all().item<bool>().Should().BeTrue();
    }

    [Fact]
    public void Tiny_runs_on_a_non_square_256_by_320_image()
    {
        using var model = new PolaPyramidVisionTransformer(PolaPvtOptions.Presets["pola_pvt_tiny"]);
        model.eval();
        var shapes = new Dictionary<string, long[]>();
        using var capture = IntermediateCapture.Attach(model, ["patch_embed1", "block2.1", "block3.1", "block4.1"], (name, t) => shapes[name] = t.shape);
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var y = model.forward(randn(1, 3, 256, 320));
        y.shape.Should().Equal(1, 1000);
        isfinite(y).all().item<bool>().Should().BeTrue();
        shapes["patch_embed1"].Should().Equal(1, 64 * 80, 64);
        shapes["block2.1"].Should().Equal(1, 32 * 40, 128);
        shapes["block3.1"].Should().Equal(1, 16 * 20, 320);
        shapes["block4.1"].Should().Equal(1, 8 * 10, 512);
    }

    [Fact]
    public void A_model_built_at_one_size_reloads_and_runs_at_another()
    {
        var options = Small("LLSL");
        using var original = new PolaPyramidVisionTransformer(options);
        Randomise(original, seed: 7);
        original.eval();

        using var stream = new MemoryStream();
        SafeTensors.Save(stream, original.state_dict());
        stream.Position = 0;
        using var file = SafeTensors.Load(stream);
        using var reloaded = new PolaPyramidVisionTransformer(options);
        StateDictLoader.Load(reloaded, file.Tensors, strict: true);
        reloaded.eval();

        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var x = randn(2, 3, 64, 64);
        Identical(reloaded.forward(x), original.forward(x)).Should().BeTrue("same weights, same size: bit-identical");

        var tall = reloaded.forward(randn(2, 3, 96, 64));
        tall.shape.Should().Equal(2, 10);
        isfinite(tall).all().item<bool>().Should().BeTrue();
    }

    [Fact]
    public void Odd_grids_are_floored_by_later_stages()
    {
        using var model = new PolaPyramidVisionTransformer(Small("LLLL", "1111"));
        model.eval();
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        // 36 × 44 → grids 9 × 11, 4 × 5, 2 × 2, 1 × 1.
        var maps = model.ForwardIntermediates(randn(1, 3, 36, 44));
        maps.Select(m => m.shape).Should().BeEquivalentTo(new[]
        {
            new long[] { 1, 8, 9, 11 }, new long[] { 1, 16, 4, 5 }, new long[] { 1, 32, 2, 2 }, new long[] { 1, 64, 1, 1 },
        }, o => o.WithStrictOrdering());
    }

    [Theory]
    [InlineData(64, 64)]
    [InlineData(96, 64)]
    public void ForwardIntermediates_gives_every_stage_map_with_the_listed_channels_and_strides(int height, int width)
    {
        using var model = new PolaPyramidVisionTransformer(Small("LSLS"));
        model.eval();
        model.FeatureInfo.Select(f => (f.Name, f.Channels, f.Reduction)).Should().Equal(
            ("block1", 8L, 4L), ("block2", 16L, 8L), ("block3", 32L, 16L), ("block4", 64L, 32L));
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var x = randn(2, 3, height, width);
        var maps = model.ForwardIntermediates(x);
        maps.Should().HaveCount(4);
        for (int i = 0; i < 4; i++)
        {
            var info = model.FeatureInfo[i];
            maps[i].shape.Should().Equal(2, info.Channels, height / info.Reduction, width / info.Reduction);
        }
        // The unpooled features are the last map's positions; pooled, its spatial mean.
        var features = model.ForwardFeatures(x);
        features.shape.Should().Equal(2, height / 32 * (width / 32), 64);
        maps[3].flatten(2).transpose(1, 2).ShouldBeClose(features, 0, "the last stage map is ForwardFeatures' tokens");
        maps[3].mean([2, 3]).ShouldBeClose(model.ForwardHead(features, preLogits: true), 1e-6, "mean of the last stage map vs the pre-logits");
    }

    // ---------------------------------------------------------------- resized positional embeddings

    [Fact]
    public void The_built_grid_uses_the_parameter_itself()
    {
        using var model = new PolaPyramidVisionTransformer(Small());
        var parameter = model.get_parameter("pos_embed2")!;
        using var noGrad = no_grad();
        var same = model.PositionEmbedding(1, 8, 8);
        same.Handle.Should().Be(parameter.Handle);
    }

    [Fact]
    public void Resized_embeddings_are_cached_only_without_gradients_and_dropped_on_mode_change()
    {
        using var model = new PolaPyramidVisionTransformer(Small());
        model.eval();
        Tensor first;
        using (no_grad())
        {
            first = model.PositionEmbedding(0, 24, 16);
            first.shape.Should().Equal(1, 24 * 16, 8);
            model.PositionEmbedding(0, 24, 16).Should().BeSameAs(first, "inference reuses the resized copy");
        }

        model.train();
        first.IsInvalid.Should().BeTrue("a change of mode drops the cache");
        using var scope = NewDisposeScope();
        var trained1 = model.PositionEmbedding(0, 24, 16);
        var trained2 = model.PositionEmbedding(0, 24, 16);
        trained2.Should().NotBeSameAs(trained1, "with gradients the resize is recomputed so it follows the parameter");
        trained1.requires_grad.Should().BeTrue();
        trained1.sum().backward();
        model.get_parameter("pos_embed1")!.grad.Should().NotBeNull("the resized embedding trains the parameter");
    }

    [Fact]
    public void Loading_weights_invalidates_the_resized_embeddings()
    {
        var options = Small();
        using var model = new PolaPyramidVisionTransformer(options);
        model.eval();
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var x = randn(1, 3, 96, 64);
        var before = model.forward(x);
        var cached = model.PositionEmbedding(0, 24, 16);

        using var donor = new PolaPyramidVisionTransformer(options);
        Randomise(donor, seed: 11);
        donor.eval();
        StateDictLoader.Load(model, donor.state_dict(), strict: true);

        cached.IsInvalid.Should().BeTrue("the cached resize of the old weights was dropped");
        var after = model.forward(x);
        Identical(after, before).Should().BeFalse();
        Identical(after, donor.forward(x)).Should().BeTrue("the reloaded model computes exactly what the donor computes");
    }

    // ---------------------------------------------------------------- classifier and weight decay

    [Fact]
    public void ResetClassifier_replaces_the_head()
    {
        using var model = new PolaPyramidVisionTransformer(Small());
        model.eval();
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var x = randn(2, 3, 64, 64);

        model.ResetClassifier(5);
        model.NumClasses.Should().Be(5);
        model.state_dict()["head.weight"].shape.Should().Equal(5, 64);
        model.forward(x).shape.Should().Equal(2, 5);

        model.ResetClassifier(0);
        model.NumClasses.Should().Be(0);
        model.state_dict().Keys.Should().NotContain(k => k.StartsWith("head.", StringComparison.Ordinal));
        Identical(model.forward(x), model.ForwardHead(model.ForwardFeatures(x), preLogits: true)).Should().BeTrue("without a classifier the pooled features are returned");
        model.Options.NumClasses.Should().Be(10);
    }

    [Fact]
    public void NoWeightDecay_names_the_positional_embeddings()
    {
        using var model = new PolaPyramidVisionTransformer(Small());
        var names = model.named_parameters().Select(p => p.name).ToHashSet();
        model.NoWeightDecay.Should().BeEquivalentTo("pos_embed1", "pos_embed2", "pos_embed3", "pos_embed4");
        model.NoWeightDecay.Should().OnlyContain(n => names.Contains(n));
    }

    [Fact]
    public void The_final_norm_is_in_the_state_dict_but_not_used()
    {
        using var model = new PolaPyramidVisionTransformer(Small());
        model.eval();
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var x = randn(1, 3, 64, 64);
        var before = model.ForwardFeatures(x);
        model.get_parameter("norm.weight")!.mul_(3).add_(1);
        Identical(model.ForwardFeatures(x), before).Should().BeTrue();
    }

    [Fact]
    public void Initialisation_is_the_official_one()
    {
        using var model = new PolaPyramidVisionTransformer(Small("LLSL"));
        using var scope = NewDisposeScope();
        var linears = model.named_modules().Where(m => m.module is Linear).Select(m => (Linear)m.module).ToList();
        linears.Should().HaveCount(4 * 5 + 1, "five per block (qg or q, kv, proj, fc1, fc2) and the head");
        var weights = cat(linears.Select(l => l.weight!.flatten()).ToList());
        weights.std().item<float>().Should().BeApproximately(0.02f, 0.002f);
        linears.Should().OnlyContain(l => l.bias!.abs().max().item<float>() == 0);
        foreach (var name in new[] { "pos_embed1", "pos_embed2", "pos_embed3", "pos_embed4" })
            model.get_parameter(name)!.abs().max().item<float>().Should().BeInRange(1e-3f, 0.2f, $"{name} is truncated-normal(0.02)");
        model.named_modules().Select(m => m.module).OfType<LayerNorm>().Should().OnlyContain(n =>
            n.weight!.eq(1).all().item<bool>() && n.bias!.eq(0).all().item<bool>());
    }

    // ---------------------------------------------------------------- bad input

    [Fact]
    public void Bad_images_are_rejected_with_the_offending_value()
    {
        using var model = new PolaPyramidVisionTransformer(Small());
        using var scope = NewDisposeScope();
        model.Invoking(m => m.forward(randn(1, 1, 64, 64))).Should().Throw<ArgumentException>()
            .Where(e => e.ParamName == "images" && e.Message.Contains("1 channels"));
        model.Invoking(m => m.forward(randn(1, 3, 66, 64))).Should().Throw<ArgumentException>()
            .Where(e => e.ParamName == "images" && e.Message.Contains("66") && e.Message.Contains("patch size 4"));
        // la_sr_ratios 8421: stage 1 needs a grid of 8, i.e. images of at least 32 (and stage 4 at least 32).
        model.Invoking(m => m.forward(randn(1, 3, 64, 16))).Should().Throw<ArgumentException>()
            .Where(e => e.ParamName == "images" && e.Message.Contains("at least 32"));
        model.Invoking(m => m.forward(randn(3, 64, 64))).Should().Throw<ArgumentException>()
            .Where(e => e.ParamName == "images");
    }

    [Theory]
    [InlineData("LLL", "1111", "'LLL' (3 letters)")]
    [InlineData("LLXL", "1111", "'X'")]
    [InlineData("LLLL", "842", "\"842\"")]
    [InlineData("LLLL", "8401", "'0'")]
    public void Bad_per_stage_strings_are_rejected(string attentionTypes, string linearSrRatios, string named)
    {
        var options = Small(attentionTypes, linearSrRatios);
        FluentActions.Invoking(() => new PolaPyramidVisionTransformer(options)).Should().Throw<ArgumentException>()
            .Where(e => e.ParamName == "options" && e.Message.Contains(named));
    }

    [Fact]
    public void Bad_hyper_parameters_are_rejected()
    {
        void Rejects(PolaPvtOptions options, string named) =>
            FluentActions.Invoking(() => new PolaPyramidVisionTransformer(options)).Should().Throw<ArgumentException>()
                .Where(e => e.ParamName == "options" && e.Message.Contains(named));

        Rejects(Small() with { EmbedDims = [8, 16, 32] }, "options.EmbedDims has 3 entries");
        Rejects(Small() with { NumHeads = [1, 2, 4, 6] }, "options.EmbedDims[3] = 64 is not divisible");
        Rejects(Small() with { NumHeads = [1, 2, 4, 64] }, "head dimension 1 must be even");
        Rejects(Small() with { ImageSize = (66, 64) }, "options.ImageSize is 66 × 64; expected a positive height and width, both multiples of 4 (options.PatchSize = 4)");
        Rejects(Small() with { ImageSize = (64, 16) }, "options.ImageSize is 64 × 16; expected both sides at least 32");
        Rejects(Small() with { DropPathRate = 1 }, "options.DropPathRate");
        Rejects(Small() with { KernelSize = 4 }, "options.KernelSize is 4");
    }

    // ---------------------------------------------------------------- helpers

    private static bool Identical(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    /// <summary>The golden files' parameter randomisation, so the tests do not run on the near-degenerate official
    /// initialisation (zero biases, zero positional encodings).</summary>
    private static void Randomise(PolaPyramidVisionTransformer model, int seed)
    {
        using var noGrad = no_grad();
        var generator = new TorchSharp.torch.Generator((ulong)seed);
        foreach (var (name, p) in model.named_parameters())
        {
            using var noise = randn(p.shape, dtype: p.dtype, generator: generator);
            if (name.EndsWith("power", StringComparison.Ordinal)) p.copy_(noise);
            else if (name.Contains("norm") && name.EndsWith(".weight", StringComparison.Ordinal)) p.copy_(noise * 0.2 + 1);
            else if (p.dim() >= 2 && name.EndsWith(".weight", StringComparison.Ordinal)) p.copy_(noise / Math.Sqrt(p.shape[1] * p.shape.Skip(2).Aggregate(1L, (a, b) => a * b)));
            else p.copy_(noise * (name.EndsWith(".bias", StringComparison.Ordinal) ? 0.1 : 0.5));
        }
    }
}
