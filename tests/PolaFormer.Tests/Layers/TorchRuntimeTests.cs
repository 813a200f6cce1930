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
    public void Defaults_retain_memory_choose_threads_and_verify_the_convolution()
    {
        var options = new CpuRuntimeOptions();
        options.RetainFreedMemory.Should().BeTrue();
        options.WaitPolicy.Should().BeNull("passive where it can still take effect");
        options.Threads.Should().BeNull();
        options.VerifyConvolution.Should().BeTrue();
        int before = TorchSharp.torch.get_num_threads();
        try
        {
            // LibTorch is loaded already (TorchTest), so the automatic wait policy is left and said so.
            TorchRuntime.ConfigureCpu(options with { RetainFreedMemory = false, VerifyConvolution = false, Threads = 1 })
                .Should().Be("CPU runtime: OpenMP wait policy left as it is (LibTorch was loaded before ConfigureCpu); 1 thread");
            TorchSharp.torch.get_num_threads().Should().Be(1);
            TorchRuntime.ConfigureCpu(options with { RetainFreedMemory = false, WaitPolicy = OpenMpWaitPolicy.Default })
                .Should().Contain("(LibTorch's choice within").And.Contain("CPU convolution matches float64");
        }
        finally
        {
            TorchSharp.torch.set_num_threads(before);
        }
        FluentActions.Invoking(() => TorchRuntime.ConfigureCpu(options with { Threads = 0 })).Should().Throw<ArgumentException>()
            .WithMessage("CpuRuntimeOptions.Threads is 0; expected at least 1*");
    }

    [Theory]
    [InlineData(2, 2, 2)]
    [InlineData(8, 16, 8)]    // LibTorch picks the physical cores: never raised to the logical count
    [InlineData(16, 2, 2)]    // a container with a 2-CPU quota on a 16-core host: capped
    [InlineData(4, 1, 1)]
    public void Automatic_threads_are_libtorchs_choice_capped_at_the_usable_processors(int libTorch, int usable, int expected)
    {
        TorchRuntime.AutomaticThreads(libTorch, usable).Should().Be(expected);
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
            TorchRuntime.NnpackEnabled.Should().Be(!before.Value,
                "NNPACK follows oneDNN: without oneDNN LibTorch would try NNPACK, and warn on every convolution where it cannot run");
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
