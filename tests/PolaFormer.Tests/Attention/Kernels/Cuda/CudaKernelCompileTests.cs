using System.Runtime.InteropServices;
using System.Text;
using FluentAssertions;
using PolaFormer.Attention;
using PolaFormer.Attention.Kernels;
using PolaFormer.Attention.Kernels.Cuda;
using PolaFormer.Tests.Infrastructure;
using Xunit;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Attention.Kernels.Cuda;

/// <summary>
/// Every kernel source through the NVRTC this machine has (on Debian 12: the non-free <c>libnvrtc11.2</c>, CUDA 11.8,
/// which eng/prerequisites.sh installs), for the H100/H200 architecture and for NVRTC's default one. No GPU needed:
/// NVRTC compiles without a device.
/// </summary>
public sealed class CudaKernelCompileTests
{
    private static readonly Lazy<(Nvrtc? Compiler, string Failure)> Compiler = new(() => (Nvrtc.TryLoad(out var reason), reason));

    internal static Nvrtc Nvrtc => Compiler.Value.Compiler ?? throw new InvalidOperationException(Compiler.Value.Failure);

    internal static bool Present => Compiler.Value.Compiler is not null;

    public static TheoryData<string, string> SourcesAndArchitectures()
    {
        var data = new TheoryData<string, string>();
        foreach (var source in CudaSources.All)
            foreach (var architecture in new[] { "sm_90", "compute_90", "default" })
                data.Add(source.FileName, architecture);
        return data;
    }

    [NvrtcTheory]
    [MemberData(nameof(SourcesAndArchitectures))]
    public void Every_kernel_source_compiles(string fileName, string architecture)
    {
        var source = CudaSources.All.Single(s => s.FileName == fileName);
        var output = Nvrtc.Compile(source.Code, source.FileName, architecture == "default" ? null : architecture);
        output.Image.Should().NotBeEmpty();
        output.IsCubin.Should().Be(architecture.StartsWith("sm_", StringComparison.Ordinal));
        if (output.IsCubin)
        {
            output.Image.AsSpan(0, 4).ToArray().Should().Equal([0x7f, (byte)'E', (byte)'L', (byte)'F'], "a cubin is an ELF file");
            foreach (var kernel in source.Kernels)
                Encoding.ASCII.GetString(output.Image).Should().Contain(kernel, "the cubin defines every kernel the runtime looks up");
        }
        else
        {
            output.Image[^1].Should().Be(0, "PTX goes to cuModuleLoadData NUL-terminated");
            var ptx = Encoding.ASCII.GetString(output.Image, 0, output.Image.Length - 1);
            foreach (var kernel in source.Kernels)
                ptx.Should().Contain($".entry {kernel}(", "the PTX defines every kernel the runtime looks up, unmangled");
        }
        output.Log.Should().NotContainEquivalentOf("warning", "the kernels compile cleanly");
    }

    [NvrtcFact]
    public void The_architecture_is_a_cubin_when_this_nvrtc_knows_the_device_and_ptx_for_a_newer_one()
    {
        var nvrtc = Nvrtc;
        nvrtc.CanEmitCubin.Should().BeTrue("NVRTC 11.1 and later emit cubins");
        var supported = nvrtc.SupportedArchitectures();
        supported.Should().Contain(90);
        CudaDeviceKernels.ChooseArchitecture(nvrtc, 90).Should().Be("sm_90");
        int newest = supported.Max();
        // A device newer than this NVRTC (sm_120 for CUDA 11.8): PTX of the newest architecture it knows, JIT-compiled by the driver.
        CudaDeviceKernels.ChooseArchitecture(nvrtc, newest + 30).Should().Be($"compute_{newest}");
        FluentActions.Invoking(() => CudaDeviceKernels.ChooseArchitecture(nvrtc, 10)).Should().Throw<CudaKernelException>();
    }

    [NvrtcFact]
    public void A_compile_error_reports_nvrtc_s_log()
    {
        FluentActions.Invoking(() => Nvrtc.Compile("extern \"C\" __global__ void broken(float* x) { x[0] = undefined_name; }", "broken.cu", "sm_90"))
            .Should().Throw<CudaKernelException>().WithMessage("*broken.cu*sm_90*undefined_name*");
    }

    [Fact]
    public void Nvrtc_is_found_on_a_machine_set_up_by_the_prerequisites_script()
    {
        // Fails rather than skips on Debian 12 when eng/prerequisites.sh has not installed libnvrtc11.2, so the
        // compile tests above cannot go unnoticed as skipped there.
        // Debian 12 by its apt sources (the script's libstdc++ step makes /etc/os-release say 13).
        bool debian12 = new[] { "/etc/apt/sources.list" }
            .Concat(Directory.Exists("/etc/apt/sources.list.d") ? Directory.GetFiles("/etc/apt/sources.list.d") : [])
            .Any(f => File.Exists(f) && System.Text.RegularExpressions.Regex.IsMatch(File.ReadAllText(f), @"^[^#]*\bbookworm\b", System.Text.RegularExpressions.RegexOptions.Multiline));
        if (!debian12 && !Present) return;
        Present.Should().BeTrue($"run eng/prerequisites.sh to install libnvrtc11.2 ({Compiler.Value.Failure})");
        Nvrtc.Version.Should().MatchRegex(@"^\d+\.\d+$");
    }
}

/// <summary>A fact that needs libnvrtc; skipped with the reason when it is missing.</summary>
public sealed class NvrtcFactAttribute : FactAttribute
{
    public NvrtcFactAttribute()
    {
        if (!CudaKernelCompileTests.Present) Skip = "libnvrtc is not installed (eng/prerequisites.sh installs Debian's libnvrtc11.2): the CUDA kernels' compilation is not checked.";
    }
}

/// <summary>The theory form of <see cref="NvrtcFactAttribute"/>.</summary>
public sealed class NvrtcTheoryAttribute : TheoryAttribute
{
    public NvrtcTheoryAttribute()
    {
        if (!CudaKernelCompileTests.Present) Skip = "libnvrtc is not installed (eng/prerequisites.sh installs Debian's libnvrtc11.2): the CUDA kernels' compilation is not checked.";
    }
}

/// <summary>What a machine without a GPU reports, and that its CPU paths do not change.</summary>
public sealed class CudaKernelStatusTests : TorchTest
{
    private static bool DriverPresent => NativeLibrary.TryLoad(CudaDriver.LibraryName, out _);

    [Fact]
    public void Without_the_nvidia_driver_the_kernels_are_unavailable_and_say_why()
    {
        if (DriverPresent) return;   // a GPU machine: CudaTests cover it
        var status = CudaKernels.Status();
        status.Available.Should().BeFalse();
        status.Reason.Should().Contain("libcuda");
        status.ToString().Should().StartWith("CUDA kernels: unavailable on cuda:0: ").And.Contain("libcuda");
        status.ToString().Should().NotContain("\n");
    }

    [Theory]
    [InlineData(null, true, false)]
    [InlineData("", true, false)]
    [InlineData("on", true, false)]
    [InlineData("check", true, true)]
    [InlineData("CHECK", true, true)]
    [InlineData("off", false, false)]
    [InlineData("0", false, false)]
    [InlineData("false", false, false)]
    [InlineData("of", false, false)]     // a typo switches them off, and the reason says so
    public void The_switch_variable_is_parsed(string? value, bool enabled, bool synchronize)
    {
        var (e, s, reason) = CudaKernels.ParseSwitch(value);
        e.Should().Be(enabled);
        s.Should().Be(synchronize);
        if (!enabled) reason.Should().Contain(CudaKernels.SwitchVariable);
    }

    [Fact]
    public void The_override_wins_over_the_environment()
    {
        try
        {
            CudaKernels.EnabledOverride = false;
            CudaKernels.Status().Reason.Should().Contain("switched off");
            CudaKernels.EnabledOverride = true;
            if (!DriverPresent) CudaKernels.Status().Reason.Should().Contain("libcuda");
        }
        finally
        {
            CudaKernels.EnabledOverride = null;
        }
    }

    [CudaFact]
    [Trait("Category", "CUDA")]
    public void On_a_gpu_the_kernels_are_available_and_match_the_operators()
    {
        var status = CudaKernels.Status();
        status.Available.Should().BeTrue(status.ToString());
        using var scope = NewDisposeScope();
        var x = (randn(2, 2, 300, 16) * 2).to(CUDA);
        var power = (1 + 4 * sigmoid(randn(1, 2, 1, 16))).to(CUDA);
        var r = randn(2, 2, 300, 32).to(CUDA);
        long before = CudaKernels.Launches;
        var (y1, gx1, gp1) = PolarityFeatureMapTests.Run(x, power, r, PolarityAttention.SignSplitFeatures);
        CudaKernels.Launches.Should().Be(before + 2, "the forward and the backward kernel ran");
        var (y2, gx2, gp2) = PolarityFeatureMapTests.Run(x, power, r, PolarityAttention.SignSplitFeaturesFromOperators);
        y1.cpu().ShouldBeClose(y2.cpu(), 1e-5, "features");
        gx1.cpu().ShouldBeClose(gx2.cpu(), 1e-4, "input gradient");
        gp1.cpu().ShouldBeClose(gp2.cpu(), 1e-4, "power gradient");
    }

    [Fact]
    public void Cpu_tensors_never_reach_the_cuda_kernels_and_their_results_are_unchanged()
    {
        using var scope = NewDisposeScope();
        var x = randn(2, 2, 20, 8);
        var power = 1 + 4 * sigmoid(randn(1, 2, 1, 8));
        CudaKernels.LauncherFor(x).Should().BeNull();
        CudaFeatureMap.TryGetLauncher(x, power, out _).Should().BeFalse();
        CudaGatedReadout.TryGetLauncher(x, randn(2, 2, 20, 8), randn(2, 20, 16), out _).Should().BeFalse();
        using var noGrad = no_grad();
        PolarityAttention.SignSplitFeatures(x, power).eq(PolarityFeatureMap.Apply(x, power)).all().item<bool>().Should().BeTrue();
        // float64 on the CPU: the operator path, as before.
        var x64 = x.to(float64);
        PolarityAttention.SignSplitFeatures(x64, power.to(float64)).eq(PolarityAttention.SignSplitFeaturesFromOperators(x64, power.to(float64)))
            .all().item<bool>().Should().BeTrue();
    }
}
