using FluentAssertions;
using PolaFormer.Attention;
using PolaFormer.Checkpoints;
using PolaFormer.Tests.Infrastructure;
using System.Globalization;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Attention;

/// <summary>
/// Every attention-kind golden file (bundled, and any in POLAFORMER_GOLDEN_DIR), with both implementations of the
/// polarity maths: forward output and every gradient against the official PyTorch numbers.
/// </summary>
public sealed class GoldenAttentionTests : TorchTest
{
    private const double OutputTolerance = 5e-6;
    private const double GradientTolerance = 2e-5;

    private readonly ITestOutputHelper _output;

    public GoldenAttentionTests(ITestOutputHelper output) => _output = output;

    public static TheoryData<string, PolarityImplementation> Cases()
    {
        var data = new TheoryData<string, PolarityImplementation>();
        foreach (var id in GoldenCase.IdsOfKind("attention"))
        {
            data.Add(id, PolarityImplementation.Fast);
            using var c = GoldenCase.Open(id);
            if (c.Module is GoldenModules.SwinPolarity or GoldenModules.PvtPolarity)
                data.Add(id, PolarityImplementation.Reference);
        }
        return data;
    }

    [Fact]
    public void The_bundled_attention_cases_are_all_found()
    {
        GoldenCase.IdsOfKind("attention").Where(id => id.StartsWith("bundled/")).Should().HaveCount(3);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Matches_the_official_forward_and_backward(string caseId, PolarityImplementation implementation)
    {
        using var c = GoldenCase.Open(caseId);
        var (module, height, width) = GoldenModules.Attention(c, implementation);
        using var _ = module;
        StateDictLoader.Load(module, c.StateDict(), strict: true, sourceName: caseId);
        module.eval();

        using var scope = NewDisposeScope();
        var x = c["input.x"].clone().requires_grad_(true);
        var mask = c.Tensors.TryGetValue("input.mask", out var m) ? m : null;
        var y = module.forward(x, height, width, mask);
        double outputError = Tolerance.ScaledError(y, c["output.y"]);
        y.ShouldBeClose(c["output.y"], OutputTolerance, $"{caseId} output.y");

        (y * c["input.R"]).sum().backward();
        var gradientErrors = new Dictionary<string, double> { ["grad.x"] = Tolerance.ScaledError(x.grad!, c["grad.x"]) };
        x.grad!.ShouldBeClose(c["grad.x"], GradientTolerance, $"{caseId} grad.x");
        var gradients = c.Tensors.Keys.Where(k => k.StartsWith("grad.") && k != "grad.x").ToList();
        var parameters = module.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        parameters.Keys.Select(k => "grad." + k).Should().BeEquivalentTo(gradients,
            "the golden file has a gradient for every parameter and the module has no others");
        foreach (var name in gradients)
        {
            var grad = parameters[name["grad.".Length..]].grad;
            grad.Should().NotBeNull($"{name} must receive a gradient");
            gradientErrors[name] = Tolerance.ScaledError(grad!, c[name]);
            grad!.ShouldBeClose(c[name], GradientTolerance, $"{caseId} {name}");
        }
        var worst = gradientErrors.MaxBy(e => e.Value);
        _output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"GOLDEN {caseId} [{implementation}] output.y {outputError:E2}; worst gradient {worst.Key} {worst.Value:E2}"));
    }
}
