using FluentAssertions;
using PolaFormer.Attention;
using PolaFormer.Checkpoints;
using PolaFormer.Models;
using PolaFormer.Tests.Infrastructure;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Cuda;

/// <summary>The golden conformance and a training step on a CUDA device. Skipped without CUDA.</summary>
[Trait("Category", "CUDA")]
public sealed class CudaTests : TorchTest
{
    public static TheoryData<string> AttentionCases() => new(GoldenCase.IdsOfKind("attention"));

    [CudaTheory]
    [MemberData(nameof(AttentionCases))]
    public void Attention_matches_the_official_numbers_on_the_gpu(string caseId)
    {
        using var c = GoldenCase.Open(caseId);
        var (module, h, w) = GoldenModules.Attention(c, PolarityImplementation.Fast);
        using var _ = module;
        StateDictLoader.Load(module, c.StateDict());
        module.to(CUDA);
        using var scope = NewDisposeScope();
        var x = c["input.x"].to(CUDA).requires_grad_(true);
        var mask = c.Tensors.TryGetValue("input.mask", out var m) ? m.to(CUDA) : null;
        var y = module.forward(x, h, w, mask);
        y.device_type.Should().Be(DeviceType.CUDA);
        y.cpu().ShouldBeClose(c["output.y"], 5e-6, $"{caseId} output.y on CUDA (TF32 off)");
        (y * c["input.R"].to(CUDA)).sum().backward();
        x.grad!.cpu().ShouldBeClose(c["grad.x"], 2e-5, $"{caseId} grad.x on CUDA");
    }

    [CudaFact]
    public void A_training_step_on_the_gpu_lowers_the_loss()
    {
        manual_seed(1);
        using var model = ModelRegistry.Create("pola_pvt_tiny", numClasses: 10, imageSize: (64, 64), device: CUDA);
        using var optimizer = optim.AdamW(model.parameters(), lr: 1e-3);
        var images = randn(8, 3, 64, 64, device: CUDA);
        var labels = randint(0, 10, 8, device: CUDA);
        double Loss() { using var s = NewDisposeScope(); using var g = no_grad(); return nn.functional.cross_entropy(model.forward(images), labels).item<float>(); }
        double before = Loss();
        for (int i = 0; i < 3; i++)
        {
            using var s = NewDisposeScope();
            var loss = nn.functional.cross_entropy(model.forward(images), labels);
            optimizer.zero_grad();
            loss.backward();
            optimizer.step();
        }
        Loss().Should().BeLessThan(before);
    }
}
