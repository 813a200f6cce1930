using FluentAssertions;
using PolaFormer.Tests.Infrastructure;
using Xunit;

namespace PolaFormer.Tests.Layers;

/// <summary>TorchRuntime.ConfigureCpu: what it applies, and the clear error when it is called too late.</summary>
[Collection(PolaFormer.Tests.Training.ProcessWideMeasurements.Name)]
public sealed class TorchRuntimeTests : TorchTest
{
    [Fact]
    public void A_wait_policy_after_LibTorch_has_loaded_is_refused_with_the_fix()
    {
        // TorchTest has loaded LibTorch (and with it OpenMP), so the policy could no longer take effect.
        if (Environment.GetEnvironmentVariable("OMP_WAIT_POLICY") is { Length: > 0 }) return;   // the environment's value would be kept
        var act = () => TorchRuntime.ConfigureCpu(new CpuRuntimeOptions { WaitPolicy = OpenMpWaitPolicy.Passive, RetainFreedMemory = false });
        act.Should().Throw<InvalidOperationException>()
            .WithMessage("*WaitPolicy = Passive*before LibTorch is loaded*first thing in Main*");
    }

    [Fact]
    public void Retaining_freed_memory_is_applied_and_reported()
    {
        string line = TorchRuntime.ConfigureCpu(new CpuRuntimeOptions { WaitPolicy = OpenMpWaitPolicy.Default });
        line.Should().StartWith("CPU runtime: ");
        if (OperatingSystem.IsLinux()) line.Should().Contain("freed native memory kept for reuse");
        using var t = TorchSharp.torch.ones(64, 1024, 1024);   // a 256 MiB block comes from the retained heap
        t.sum().item<float>().Should().Be(64 * 1024 * 1024);
    }

    [Fact]
    public void Defaults_retain_memory_and_verify_the_convolution_and_nothing_else()
    {
        var options = new CpuRuntimeOptions();
        options.RetainFreedMemory.Should().BeTrue();
        options.WaitPolicy.Should().Be(OpenMpWaitPolicy.Default);
        options.VerifyConvolution.Should().BeTrue();
        TorchRuntime.ConfigureCpu(options with { RetainFreedMemory = false, VerifyConvolution = false }).Should().Be("CPU runtime: defaults");
        TorchRuntime.ConfigureCpu(options with { RetainFreedMemory = false }).Should().StartWith("CPU runtime: CPU convolution matches float64");
    }

    [Fact]
    public void The_onednn_switch_is_reachable_and_round_trips()
    {
        bool? before = TorchRuntime.OneDnnEnabled;
        before.Should().NotBeNull("LibTorch 2.10's CPU library exports at::Context::setUserEnabledMkldnn");
        try
        {
            TorchRuntime.SetOneDnnEnabled(!before!.Value).Should().BeTrue();
            TorchRuntime.OneDnnEnabled.Should().Be(!before.Value);
            // Either way the convolution LibTorch picks must now be right, or the check says so.
            TorchRuntime.VerifyCpuConvolution(disableOneDnnIfWrong: false).Should().Match<CpuConvolutionCheck>(c => c.OneDnnEnabled == !before.Value);
        }
        finally
        {
            TorchRuntime.SetOneDnnEnabled(before!.Value);
        }
        TorchRuntime.OneDnnEnabled.Should().Be(before.Value);
    }
}
