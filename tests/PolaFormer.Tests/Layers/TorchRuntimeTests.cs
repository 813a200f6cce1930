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
    public void Defaults_change_nothing_but_memory_retention()
    {
        var options = new CpuRuntimeOptions();
        options.RetainFreedMemory.Should().BeTrue();
        options.WaitPolicy.Should().Be(OpenMpWaitPolicy.Default);
        TorchRuntime.ConfigureCpu(options with { RetainFreedMemory = false }).Should().Be("CPU runtime: defaults");
    }
}
