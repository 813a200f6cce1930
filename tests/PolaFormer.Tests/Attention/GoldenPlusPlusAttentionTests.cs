using System.Globalization;
using FluentAssertions;
using PolaFormer.Attention;
using PolaFormer.Checkpoints;
using PolaFormer.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Attention;

/// <summary>
/// The PolaFormer++ attention cases (<c>attnpp_*</c>, bundled and any in POLAFORMER_GOLDEN_DIR): forward output
/// and every gradient against the authors' code, in float32 and, where the f64 companion exists, float64; and the
/// rotary tables the layers build for themselves against the ones the authors' code passed in.
/// </summary>
public sealed class GoldenPlusPlusAttentionTests : TorchTest
{
    private const double OutputTolerance = 5e-6;
    private const double GradientTolerance = 2e-5;
    private const double Float64Tolerance = 1e-10;
    private const string PolarityModule = ".PolaLinearAttention";
    private const string SoftmaxModule = ".VanillaSelfAttention";

    private readonly ITestOutputHelper _output;

    public GoldenPlusPlusAttentionTests(ITestOutputHelper output) => _output = output;

    public static TheoryData<string, PolarityImplementation> Cases()
    {
        var data = new TheoryData<string, PolarityImplementation>();
        foreach (var id in GoldenCase.PlusPlusIds("attnpp_"))
        {
            data.Add(id, PolarityImplementation.Fast);
            using var c = GoldenCase.Open(id);
            if (c.Module.EndsWith(PolarityModule, StringComparison.Ordinal))
                data.Add(id, PolarityImplementation.Reference);
        }
        return data;
    }

    /// <summary>The cases that have an f64/ companion (every bundled one does; a case given through
    /// POLAFORMER_GOLDEN_DIR may come without).</summary>
    public static TheoryData<string, PolarityImplementation> Float64Cases()
    {
        var data = new TheoryData<string, PolarityImplementation>();
        foreach (var row in Cases())
        {
            var (id, implementation) = ((string)row[0], (PolarityImplementation)row[1]);
            using var c = GoldenCase.Open(id);
            if (c.Float64 is not null) data.Add(id, implementation);
        }
        return data;
    }

    public static TheoryData<string> Ids()
    {
        var data = new TheoryData<string>();
        foreach (var id in GoldenCase.PlusPlusIds("attnpp_")) data.Add(id);
        return data;
    }

    [Fact]
    public void The_bundled_cases_are_found_and_kept_apart_from_the_PolaFormer_ones()
    {
        GoldenCase.PlusPlusIds("attnpp_").Where(id => id.StartsWith("bundled/")).Should().BeEquivalentTo(
            "bundled/attnpp_pacs_d32_h2_hw6.safetensors", "bundled/attnpp_vanilla_d32_h2_hw4.safetensors",
            "bundled/attnpp_pacs_d64_h4_hw8.safetensors", "bundled/attnpp_pacs_d32_h2_h4w6.safetensors",
            "bundled/attnpp_vanilla_d48_h3_h6w4.safetensors");
        GoldenCase.AllIds().Should().NotContain(id => id.Contains("pp_"), "the PolaFormer golden tests read another layout");
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Matches_the_official_forward_and_backward(string caseId, PolarityImplementation implementation)
    {
        using var c = GoldenCase.Open(caseId);
        var errors = Run(c, c.Tensors, implementation, ScalarType.Float32, OutputTolerance, GradientTolerance, caseId);
        Report(caseId, implementation, "float32", errors);
    }

    [Fact]
    public void Every_bundled_case_has_its_float64_companion()
    {
        foreach (var id in GoldenCase.PlusPlusIds("attnpp_").Where(id => id.StartsWith("bundled/")))
        {
            using var c = GoldenCase.Open(id);
            c.Float64.Should().NotBeNull($"{id} ships with f64/{Path.GetFileNameWithoutExtension(id)}.f64.safetensors");
            c.Float64!.Tensors["output.y"].dtype.Should().Be(ScalarType.Float64);
        }
    }

    [Theory]
    [MemberData(nameof(Float64Cases))]
    public void Matches_the_official_float64_numbers(string caseId, PolarityImplementation implementation)
    {
        using var c = GoldenCase.Open(caseId);
        var errors = Run(c, c.Float64!.Tensors, implementation, ScalarType.Float64, Float64Tolerance, Float64Tolerance, caseId + " float64");
        Report(caseId, implementation, "float64", errors);
    }

    [Theory]
    [MemberData(nameof(Ids))]
    public void Builds_the_official_rotary_tables_and_the_same_output_from_them(string caseId)
    {
        using var c = GoldenCase.Open(caseId);
        using var module = Build(c, PolarityImplementation.Reference);
        StateDictLoader.Load(module, c.PrefixedStateDict(), strict: true, sourceName: caseId);
        module.eval();
        long height = c.Int("H"), width = c.Int("W");
        using var scope = NewDisposeScope();

        var (sin, cos) = module is PaCSAttention p ? p.RotaryTables(height, width) : ((VanillaSelfAttention)module).RotaryTables(height, width);
        sin.ShouldBeClose(c["input.sin"], 1e-6, $"{caseId} sin table");
        cos.ShouldBeClose(c["input.cos"], 1e-6, $"{caseId} cos table");

        var x = c["input.x"];
        var y = module.forward(x.flatten(2).transpose(1, 2), height, width);
        ToImage(y, height, width).ShouldBeClose(c["output.y"], OutputTolerance, $"{caseId} output.y with the layer's own tables");
    }

    [Fact]
    public void The_official_parameter_names_are_the_state_dict_keys()
    {
        using var polarity = new PaCSAttention(32, 2);
        polarity.state_dict().Keys.Should().BeEquivalentTo("qkvg.weight", "qkvg.bias", "lepe.weight", "lepe.bias", "proj.weight", "proj.bias", "s1", "s2");
        polarity.get_parameter("s1")!.shape.Should().Equal(1, 2, 1, 32);
        using var softmax = new VanillaSelfAttention(32, 2);
        softmax.state_dict().Keys.Should().BeEquivalentTo("qkvo.weight", "qkvo.bias", "lepe.weight", "lepe.bias", "proj.weight", "proj.bias");
    }

    [Fact]
    public void Unsupported_shapes_and_tables_are_refused_with_the_input_named()
    {
        FluentActions.Invoking(() => new VanillaSelfAttention(24, 4)).Should().Throw<ArgumentException>()
            .WithParameterName("numHeads").WithMessage("*6 channels per head*multiple of 4*");
        using var layer = new PaCSAttention(32, 2);
        using var x = zeros(1, 16, 32);
        using var wrong = zeros(16, 16);
        FluentActions.Invoking(() => layer.ForwardWithTables(x, 4, 4, wrong, wrong)).Should().Throw<ArgumentException>()
            .WithParameterName("sin").WithMessage("*(16, 16)*expected (N=16, 2·dim/numHeads=32)*");
        FluentActions.Invoking(() => layer.forward(x, 4, 4, paddingMask: ones(1, 16))).Should().Throw<ArgumentException>()
            .WithParameterName("paddingMask");
    }

    private static TokenAttention Build(GoldenCase c, PolarityImplementation implementation, ScalarType? dtype = null)
    {
        long dim = c.Int("dim"), heads = c.Int("num_heads");
        if (c.Module.EndsWith(PolarityModule, StringComparison.Ordinal)) return new PaCSAttention(dim, heads, implementation, dtype: dtype);
        if (c.Module.EndsWith(SoftmaxModule, StringComparison.Ordinal)) return new VanillaSelfAttention(dim, heads, dtype: dtype);
        throw new NotSupportedException($"Golden case {c.Id}: no PolaFormer++ attention builder for module '{c.Module}'.");
    }

    private static Tensor ToImage(Tensor tokens, long height, long width) =>
        tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], height, width);

    private static Dictionary<string, double> Run(GoldenCase c, IReadOnlyDictionary<string, Tensor> t,
        PolarityImplementation implementation, ScalarType dtype, double outputTolerance, double gradientTolerance, string what)
    {
        using var module = Build(c, implementation, dtype);
        var state = t.Where(kv => kv.Key.StartsWith("param.", StringComparison.Ordinal)).ToDictionary(kv => kv.Key["param.".Length..], kv => kv.Value);
        StateDictLoader.Load(module, state, strict: true, sourceName: what);
        module.eval();
        long height = c.Int("H"), width = c.Int("W");

        using var scope = NewDisposeScope();
        var image = t["input.x"].clone().requires_grad_(true);
        var tokens = image.flatten(2).transpose(1, 2);
        var y = ToImage(module switch
        {
            PaCSAttention p => p.ForwardWithTables(tokens, height, width, t["input.sin"], t["input.cos"]),
            VanillaSelfAttention v => v.ForwardWithTables(tokens, height, width, t["input.sin"], t["input.cos"]),
            _ => throw new InvalidOperationException(module.GetType().Name),
        }, height, width);
        y.dtype.Should().Be(dtype);
        var errors = new Dictionary<string, double> { ["output.y"] = Tolerance.ScaledError(y, t["output.y"]) };
        y.ShouldBeClose(t["output.y"], outputTolerance, $"{what} output.y");

        (y * t["input.R"]).sum().backward();
        errors["grad.x"] = Tolerance.ScaledError(image.grad!, t["grad.x"]);
        image.grad!.ShouldBeClose(t["grad.x"], gradientTolerance, $"{what} grad.x");
        var gradients = t.Keys.Where(k => k.StartsWith("grad.", StringComparison.Ordinal) && k != "grad.x").ToList();
        var parameters = module.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        parameters.Keys.Select(k => "grad." + k).Should().BeEquivalentTo(gradients,
            "the golden file has a gradient for every parameter and the module has no others");
        foreach (var name in gradients)
        {
            var grad = parameters[name["grad.".Length..]].grad;
            grad.Should().NotBeNull($"{name} must receive a gradient");
            errors[name] = Tolerance.ScaledError(grad!, t[name]);
            grad!.ShouldBeClose(t[name], gradientTolerance, $"{what} {name}");
        }
        return errors;
    }

    private void Report(string caseId, PolarityImplementation implementation, string dtype, Dictionary<string, double> errors)
    {
        var worst = errors.Where(e => e.Key != "output.y").MaxBy(e => e.Value);
        _output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"GOLDEN {caseId} [{implementation}, {dtype}] output.y {errors["output.y"]:E2}; worst gradient {worst.Key} {worst.Value:E2}"));
    }
}
