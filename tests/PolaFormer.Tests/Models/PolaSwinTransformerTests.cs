using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using FluentAssertions;
using PolaFormer.Attention;
using PolaFormer.Checkpoints;
using PolaFormer.Models;
using PolaFormer.Tests.Infrastructure;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Models;

/// <summary>Pola-Swin: the official forward numbers, the released state-dict layouts, and inputs of any size.</summary>
public sealed class PolaSwinTransformerTests : TorchTest
{
    private const string OfficialModule = "models.pola_swin.PolaSwinTransformer";
    private const double Float32Tolerance = 1e-5;
    private const double Float64Tolerance = 1e-10;

    private readonly ITestOutputHelper _output;

    public PolaSwinTransformerTests(ITestOutputHelper output) => _output = output;

    // The golden model's configuration (img 64, embed 8, window 8, LLSS), for the size tests.
    private static readonly PolaSwinOptions Small = new()
    {
        ImageSize = (64, 64), NumClasses = 10, EmbedDim = 8, Depths = [2, 2, 2, 2], NumHeads = [1, 2, 4, 8], WindowSize = 8,
        DropPathRate = 0, AttentionTypes = "LLSS",
    };

    public static TheoryData<string> GoldenCases()
    {
        var data = new TheoryData<string>();
        foreach (var id in GoldenCase.IdsOfKind("model"))
        {
            using var c = GoldenCase.Open(id);
            if (c.Module == OfficialModule) data.Add(id);
        }
        return data;
    }

    [Fact]
    public void The_bundled_golden_model_is_found()
    {
        GoldenCases().Cast<object[]>().Select(row => (string)row[0]).Should().Contain("bundled/model_pola_swin_img64_e8_w8_LLSS.safetensors");
    }

    [Theory]
    [MemberData(nameof(GoldenCases))]
    public void Matches_the_official_forward_in_float32_and_float64(string caseId)
    {
        using var c = GoldenCase.Open(caseId);
        using var model = new PolaSwinTransformer(GoldenModels.SwinOptions(c));
        if (c.Has("blocks")) model.DescribeBlocks().Should().Equal(c.Text("blocks").Split(';'));

        // The shift masks this port builds must be the official ones (checked before the load overwrites them).
        var built = model.state_dict();
        foreach (var key in c.Tensors.Keys.Where(k => k.EndsWith("attn_mask", StringComparison.Ordinal)))
            Tolerance.ScaledError(built[key], c[key]).Should().Be(0,$"{key} must be built exactly as the official code builds it");

        StateDictLoader.Load(model, c.StateDict(), strict: true, sourceName: caseId);
        model.eval();

        var stopwatch = Stopwatch.StartNew();
        Compare(model, c.Tensors, c["input.x"], Float32Tolerance, $"{caseId} float32");
        if (c.Float64 is { } f64)
        {
            model.to(float64);
            Compare(model, f64.Tensors, c["input.x"].to(float64), Float64Tolerance, $"{caseId} float64");
        }
        _output.WriteLine($"forward comparisons took {stopwatch.ElapsedMilliseconds} ms");
    }

    private void Compare(PolaSwinTransformer model, IReadOnlyDictionary<string, Tensor> expected, Tensor x, double tolerance, string what)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var errors = new Dictionary<string, double>();
        var names = expected.Keys.Where(k => k.StartsWith("inter.", StringComparison.Ordinal)).Select(k => k["inter.".Length..]);
        Tensor y;
        // Forward hooks on the named modules: they fire because the model calls its blocks with call().
        using (IntermediateCapture.Attach(model, names, (name, t) => errors["inter." + name] = Tolerance.ScaledError(t, expected["inter." + name])))
            y = model.forward(x);
        var features = model.ForwardHead(model.ForwardFeatures(x), preLogits: true);   // the golden output.features are pooled

        errors.Keys.Should().BeEquivalentTo(expected.Keys.Where(k => k.StartsWith("inter.", StringComparison.Ordinal)),
            "every intermediate of the golden file is observed, under the same name");
        errors["output.y"] = Tolerance.ScaledError(y, expected["output.y"]);
        errors["output.features"] = Tolerance.ScaledError(features, expected["output.features"]);
        var worstInter = errors.Where(kv => kv.Key.StartsWith("inter.", StringComparison.Ordinal)).MaxBy(kv => kv.Value);
        _output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"GOLDEN {what}: output.y {errors["output.y"]:E2}, output.features {errors["output.features"]:E2}, worst {worstInter.Key} {worstInter.Value:E2}"));
        foreach (var (name, error) in errors)
        {
            double.IsFinite(error).Should().BeTrue($"{what} {name} must be finite");
            error.Should().BeLessThanOrEqualTo(tolerance, $"{what} {name}: scaled max-abs error {error:E3}");
        }
    }

    [Theory]
    [InlineData("statedict_pola_swin_tiny.json", 29_285_696L)]
    [InlineData("statedict_pola_swin_small.json", 50_603_600L)]
    [InlineData("statedict_pola_swin_base.json", 89_137_864L)]
    [InlineData("statedict_pola_swin_base_384.json", 91_599_304L)]
    public void The_presets_have_the_official_state_dict(string listing, long parameterCount)
    {
        using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(GoldenCase.BundledFolder, listing)));
        var root = json.RootElement;
        var preset = PolaSwinOptions.Presets[root.GetProperty("model").GetString()!];
        var args = root.GetProperty("constructor_args");
        long[] Ints(string key) => args.GetProperty(key).EnumerateArray().Select(e => e.GetInt64()).ToArray();
        preset.ImageSize.Should().Be((args.GetProperty("img_size").GetInt64(), args.GetProperty("img_size").GetInt64()));
        preset.PatchSize.Should().Be(args.GetProperty("patch_size").GetInt32());
        preset.InChannels.Should().Be(args.GetProperty("in_chans").GetInt32());
        preset.NumClasses.Should().Be(args.GetProperty("num_classes").GetInt32());
        preset.EmbedDim.Should().Be(args.GetProperty("embed_dim").GetInt32());
        preset.Depths.Should().Equal(Ints("depths"));
        preset.NumHeads.Should().Equal(Ints("num_heads"));
        preset.WindowSize.Should().Be(args.GetProperty("window_size").GetInt32());
        preset.MlpRatio.Should().Be(args.GetProperty("mlp_ratio").GetDouble());
        preset.QkvBias.Should().Be(args.GetProperty("qkv_bias").GetBoolean());
        preset.QkScale.Should().BeNull();
        preset.DropRate.Should().Be(args.GetProperty("drop_rate").GetDouble());
        preset.DropPathRate.Should().Be(args.GetProperty("drop_path_rate").GetDouble());
        preset.Ape.Should().Be(args.GetProperty("ape").GetBoolean());
        preset.PatchNorm.Should().Be(args.GetProperty("patch_norm").GetBoolean());
        preset.Alpha.Should().Be(args.GetProperty("alpha").GetDouble());
        preset.KernelSize.Should().Be(args.GetProperty("kernel_size").GetInt32());
        preset.AttentionTypes.Should().Be(args.GetProperty("attn_type").GetString());

        using var model = new PolaSwinTransformer(preset);
        model.DescribeBlocks().Should().Equal(root.GetProperty("blocks").EnumerateArray().Select(e => e.GetString()));

        OfficialStateDict.ShouldMatch(model, root).Should().Be(parameterCount);
    }

    [Fact]
    public void Tiny_runs_at_224()
    {
        using var model = new PolaSwinTransformer(PolaSwinOptions.Presets["pola_swin_tiny"]);
        model.eval();
        using var noGrad = no_grad();
        using var y = model.forward(randn(1, 3, 224, 224));
        y.shape.Should().Equal(1, 1000);
        y.isfinite().all().item<bool>().Should().BeTrue();
    }

    [Fact]
    public void Tiny_runs_at_a_non_square_size_that_needs_padding()
    {
        // 256 × 320: stage 1 is 64 × 80 with 56-windows (padded to 112 × 112), stage 2 32 × 40 with its window
        // clamped to 32 (padded to 32 × 64), stages 3–4 (softmax, window 7) 16 × 20 and 8 × 10, shifted and padded.
        using var model = new PolaSwinTransformer(PolaSwinOptions.Presets["pola_swin_tiny"]);
        model.eval();
        model.Block(0, 1).Geometry(64, 80).Should().Be((56L, 28L));
        model.Block(1, 0).Geometry(32, 40).Should().Be((32L, 0L));
        model.Block(2, 1).Geometry(16, 20).Should().Be((7L, 3L));
        model.Block(3, 1).Geometry(8, 10).Should().Be((7L, 3L));
        using var noGrad = no_grad();
        using var y = model.forward(randn(1, 3, 256, 320));
        y.shape.Should().Equal(1, 1000);
        y.isfinite().all().item<bool>().Should().BeTrue();
    }

    [Fact]
    public void A_small_model_runs_and_gives_per_stage_maps_at_any_multiple_of_32()
    {
        using var model = new PolaSwinTransformer(Small);
        model.eval();
        model.FeatureInfo.Select(f => (f.Name, f.Channels, f.Reduction)).Should().Equal(
            ("layers.0", 8L, 4L), ("layers.1", 16L, 8L), ("layers.2", 32L, 16L), ("layers.3", 64L, 32L));
        using var noGrad = no_grad();
        foreach (var (h, w) in new[] { (64L, 64L), (96L, 64L), (32L, 160L), (128L, 128L) })
        {
            using var scope = NewDisposeScope();
            var images = randn(2, 3, h, w);
            var y = model.forward(images);
            y.shape.Should().Equal(2, 10);
            y.isfinite().all().item<bool>().Should().BeTrue($"logits at {h} × {w} are finite");

            var maps = model.ForwardIntermediates(images, norm: true);
            maps.Should().HaveCount(4);
            for (int i = 0; i < 4; i++)
            {
                var info = model.FeatureInfo[i];
                maps[i].shape.Should().Equal(2, info.Channels, h / info.Reduction, w / info.Reduction);
                maps[i].isfinite().all().item<bool>().Should().BeTrue();
            }
            // With norm, the last map is the final norm's output: its mean over positions is the pooled feature vector.
            maps[3].mean([2, 3]).ShouldBeClose(model.ForwardHead(model.ForwardFeatures(images), preLogits: true), 1e-6, $"pooled last map at {h} × {w}");
        }
    }

    [Fact]
    public void Stored_and_run_time_shift_masks_give_the_same_model()
    {
        // Same weights, two construction sizes: at 224 model A uses the masks it stored; model B (built for 448)
        // recomputes window, shift and masks at run time for every stage.
        var options = Small with { ImageSize = (224, 224), WindowSize = 7 };
        using var a = new PolaSwinTransformer(options);
        using var b = new PolaSwinTransformer(options with { ImageSize = (448, 448) });
        var report = StateDictLoader.Load(b, a.state_dict(), strict: false);
        report.Missing.Concat(report.Unexpected).Concat(report.Mismatched.Select(m => m.Key))
            .Should().OnlyContain(k => k.EndsWith("attn_mask", StringComparison.Ordinal), "only the stored masks depend on the construction size");
        report.Mismatched.Should().NotBeEmpty();
        a.Block(2, 1).Geometry(14, 14).Should().Be((7L, 3L), "the stage-3 odd blocks are shifted softmax blocks");
        a.eval();
        b.eval();
        using var noGrad = no_grad();
        using var x = randn(1, 3, 224, 224);
        using var ya = a.forward(x);
        using var yb = b.forward(x);
        yb.ShouldBeClose(ya, 1e-6, "model built for 448 run at 224");
    }

    [Theory]
    [InlineData(0, 8, 12)] // polarity block, window 8: 8 × 12 is padded to 8 × 16
    [InlineData(2, 7, 10)] // softmax block built with a 4-window table, run with 7-windows: 7 × 10 padded to 7 × 14
    public void Padding_does_not_reach_the_windows_it_does_not_touch(int stage, long height, long width)
    {
        // The left window of the padded map holds only real tokens; it must come out as if it were the whole map.
        using var model = new PolaSwinTransformer(Small);
        model.eval();
        var block = model.Block(stage, 0);
        long window = block.Geometry(height, width).Window;
        window.Should().Be(height);
        long channels = model.FeatureInfo[stage].Channels;
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var map = randn(2, height, width, channels);
        var whole = block.forward(map.reshape(2, height * width, channels), height, width).view(2, height, width, channels);
        var left = map.narrow(2, 0, window).contiguous();
        var alone = block.forward(left.reshape(2, height * window, channels), height, window).view(2, height, window, channels);
        whole.narrow(2, 0, window).ShouldBeClose(alone, 1e-6, "left window of the padded map");
        whole.isfinite().all().item<bool>().Should().BeTrue();
    }

    [Fact]
    public void Padded_softmax_windows_attend_only_to_real_tokens()
    {
        // A softmax block (window 7, built table) on a 7 × 10 map: two windows, the right one holding 7 × 3 real
        // tokens and 28 padding tokens. Reference: plain Swin attention restricted to the real tokens.
        const long H = 7, W = 10, C = 32, Heads = 4, HeadDim = C / Heads, Window = 7;
        using var model = new PolaSwinTransformer(Small with { ImageSize = (224, 224) });
        var block = model.Block(2, 0);
        block.Geometry(H, W).Should().Be((Window, 0L));
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        foreach (var parameter in block.parameters()) parameter.add_(randn_like(parameter) * 0.2);
        const string Prefix = "layers.2.blocks.0.";
        var p = model.state_dict().Where(kv => kv.Key.StartsWith(Prefix, StringComparison.Ordinal))
            .ToDictionary(kv => kv.Key[Prefix.Length..], kv => kv.Value);

        var x = randn(1, H * W, C);
        var y = block.forward(x, H, W);

        var normalised = nn.functional.layer_norm(x, [C], p["norm1.weight"], p["norm1.bias"], 1e-5).view(H, W, C);
        var index = WindowAttention.RelativePositionIndex(Window);
        var attended = zeros(H, W, C);
        for (long left = 0; left < W; left += Window)
        {
            long cols = Math.Min(Window, W - left);
            long n = H * cols;
            var tokens = normalised.narrow(1, left, cols).reshape(n, C);
            var ids = tensor(Enumerable.Range(0, (int)H).SelectMany(i => Enumerable.Range(0, (int)cols).Select(j => i * Window + j)).ToArray());
            var bias = p["attn.relative_position_bias_table"]
                .index_select(0, index.index_select(0, ids).index_select(1, ids).flatten())
                .view(n, n, Heads).permute(2, 0, 1);
            var qkv = nn.functional.linear(tokens, p["attn.qkv.weight"], p["attn.qkv.bias"]).view(n, 3, Heads, HeadDim).permute(1, 2, 0, 3);
            var logits = (qkv[0] * Math.Pow(HeadDim, -0.5)).matmul(qkv[1].transpose(-2, -1)) + bias;
            var output = logits.softmax(-1).matmul(qkv[2]).transpose(0, 1).reshape(n, C);
            output = nn.functional.linear(output, p["attn.proj.weight"], p["attn.proj.bias"]);
            attended.narrow(1, left, cols).copy_(output.view(H, cols, C));
        }
        var expected = x + attended.view(1, H * W, C);
        var hidden = nn.functional.gelu(nn.functional.linear(
            nn.functional.layer_norm(expected, [C], p["norm2.weight"], p["norm2.bias"], 1e-5), p["mlp.fc1.weight"], p["mlp.fc1.bias"]));
        expected = expected + nn.functional.linear(hidden, p["mlp.fc2.weight"], p["mlp.fc2.bias"]);
        y.ShouldBeClose(expected, 1e-5, "padded softmax block against attention over real tokens only");
    }

    [Fact]
    public void Images_of_a_batch_do_not_see_each_other_at_padded_sizes()
    {
        using var model = new PolaSwinTransformer(Small);
        model.eval();
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var images = randn(3, 3, 96, 64);
        var together = model.forward(images);
        for (int b = 0; b < 3; b++)
            together.narrow(0, b, 1).ShouldBeClose(model.forward(images.narrow(0, b, 1)), 1e-5, $"image {b} alone");
    }

    [Fact]
    public void Training_at_another_size_reaches_every_parameter()
    {
        // 32 × 160: stage 2 runs 4-windows with the 8-window positional encodings resized, stage 3 2-windows with
        // the 4-window tables resized (and everything padded); gradients must flow through the resizing.
        using var model = new PolaSwinTransformer(Small with { Ape = true, DropPathRate = 0.1 });
        model.train();
        // Eight images: stochastic depth drops a branch for a whole image, and with two images a block's branch lost
        // both (and its parameters their gradient) about once in a hundred runs; with eight it does not happen.
        var y = model.forward(randn(8, 3, 32, 160));
        y.sum().backward();
        foreach (var (name, parameter) in model.named_parameters())
        {
            parameter.grad.Should().NotBeNull($"{name} must receive a gradient");
            parameter.grad!.isfinite().all().item<bool>().Should().BeTrue($"{name}'s gradient must be finite");
        }
        // Stage 4 runs 1 × 1 windows, where softmax over the single key makes its bias tables irrelevant.
        var resized = model.named_parameters().Where(p => p.name == "absolute_pos_embed"
            || p.name.EndsWith("positional_encoding", StringComparison.Ordinal)
            || (p.name.EndsWith("bias_table", StringComparison.Ordinal) && !p.name.StartsWith("layers.3.", StringComparison.Ordinal))).ToList();
        resized.Should().HaveCount(1 + 4 + 2);
        resized.Where(p => p.parameter.grad!.abs().sum().item<float>() == 0).Select(p => p.name).Should().BeEmpty();
    }

    [Fact]
    public void The_initialisation_is_the_official_one()
    {
        using var model = new PolaSwinTransformer(Small with { Ape = true, EmbedDim = 32, NumHeads = [2, 4, 8, 16] });
        var linears = new[] { ".qkv.", ".qkvg.", ".proj.", ".fc1.", ".fc2.", ".reduction.", "head." };
        foreach (var (name, p) in model.named_parameters())
        {
            bool linear = !name.StartsWith("patch_embed.", StringComparison.Ordinal) // a convolution, default init
                && linears.Any(l => name.Contains(l, StringComparison.Ordinal) || name.StartsWith(l, StringComparison.Ordinal));
            if (linear && name.EndsWith(".weight", StringComparison.Ordinal) || name == "absolute_pos_embed")
            {
                // trunc_normal_(std=.02) truncates at ±2 absolute, i.e. practically a plain normal.
                p.std().item<float>().Should().BeInRange(0.017f, 0.023f, $"{name} is normal with std 0.02");
                p.mean().item<float>().Should().BeInRange(-0.005f, 0.005f, $"{name} has mean 0");
            }
            else if (linear || name.EndsWith("norm1.bias", StringComparison.Ordinal) || name.EndsWith("norm2.bias", StringComparison.Ordinal)
                     || name.EndsWith(".power", StringComparison.Ordinal) || name.EndsWith(".scale", StringComparison.Ordinal)
                     || name.EndsWith("positional_encoding", StringComparison.Ordinal))
                p.abs().max().item<float>().Should().Be(0, $"{name} starts at zero");
            else if (name.EndsWith("norm1.weight", StringComparison.Ordinal) || name.EndsWith("norm2.weight", StringComparison.Ordinal))
                p.eq(1).all().item<bool>().Should().BeTrue($"{name} starts at one");
        }
    }

    [Fact]
    public void The_classifier_can_be_replaced_or_removed_and_weight_decay_names_exist()
    {
        using var model = new PolaSwinTransformer(Small with { Ape = true });
        var parameters = model.named_parameters().Select(p => p.name).ToList();
        parameters.Should().Contain(model.NoWeightDecay);
        foreach (var keyword in model.NoWeightDecayKeywords)
            parameters.Should().Contain(p => p.Contains(keyword, StringComparison.Ordinal));

        model.eval();
        using var noGrad = no_grad();
        using var x = randn(1, 3, 64, 96);
        model.ResetClassifier(7);
        model.NumClasses.Should().Be(7);
        model.state_dict()["head.weight"].shape.Should().Equal(7, 64);
        using (var y = model.forward(x)) y.shape.Should().Equal(1, 7);
        model.ResetClassifier(0);
        model.NumClasses.Should().Be(0);
        model.state_dict().Keys.Should().NotContain(k => k.StartsWith("head.", StringComparison.Ordinal));
        using (var y = model.forward(x)) y.shape.Should().Equal(1, model.NumFeatures);
    }

    [Fact]
    public void Bad_inputs_and_options_are_rejected_with_the_value_named()
    {
        using var model = new PolaSwinTransformer(Small);
        model.Invoking(m => m.forward(zeros(1, 4, 64, 64))).Should().Throw<ArgumentException>().WithMessage("*4 channels*");
        model.Invoking(m => m.forward(zeros(1, 3, 64, 80))).Should().Throw<ArgumentException>().WithMessage("*64 × 80*multiples of 32*");
        model.Invoking(m => m.forward(zeros(3, 64, 64))).Should().Throw<ArgumentException>().WithMessage("*(3, 64, 64)*");

        FluentActions.Invoking(() => new PolaSwinTransformer(Small with { AttentionTypes = "LLS" }))
            .Should().Throw<ArgumentException>().WithMessage("*'LLS'*");
        FluentActions.Invoking(() => new PolaSwinTransformer(Small with { AttentionTypes = "LLXS" }))
            .Should().Throw<ArgumentException>().WithMessage("*'LLXS'*'X'*");
        FluentActions.Invoking(() => new PolaSwinTransformer(Small with { AttentionTypes = "LLMS" }))
            .Should().Throw<ArgumentException>().WithMessage("*'LLMS'*");
        FluentActions.Invoking(() => new PolaSwinTransformer(Small with { ImageSize = (64, 80) }))
            .Should().Throw<ArgumentException>().WithParameterName("options").WithMessage("options.ImageSize is 64 × 80; expected *multiples of 32*");
        FluentActions.Invoking(() => new PolaSwinTransformer(Small with { NumHeads = [1, 2, 4] }))
            .Should().Throw<ArgumentException>().WithMessage("*NumHeads*");
        FluentActions.Invoking(() => new PolaSwinTransformer(Small with { NumHeads = [8, 2, 4, 8] }))
            .Should().Throw<ArgumentException>().WithMessage("*even head dimension*");
    }

    [Fact]
    public void Mixed_stages_put_polarity_blocks_first()
    {
        using var model = new PolaSwinTransformer(Small with { Depths = [2, 2, 3, 2], AttentionTypes = "LLMS2" });
        model.DescribeBlocks().Where(b => b.StartsWith("layers.2.", StringComparison.Ordinal)).Select(b => b.Split(':')[1])
            .Should().Equal("L", "L", "S");
    }
}
