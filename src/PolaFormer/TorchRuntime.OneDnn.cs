using System.Globalization;
using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace PolaFormer;

/// <summary>What <see cref="TorchRuntime.VerifyCpuConvolution"/> found.</summary>
/// <param name="Correct">Whether LibTorch's float32 CPU convolution matched float64 on every probed input width, as
/// LibTorch was configured when the check ran.</param>
/// <param name="LargestError">The largest absolute difference from float64 (outputs are of unit scale; float32
/// rounding gives about 1e-6).</param>
/// <param name="WorstInputChannels">The input width with that difference.</param>
/// <param name="OneDnnEnabled">Whether LibTorch uses oneDNN after the check (null where this build of LibTorch does not
/// expose the switch).</param>
public sealed record CpuConvolutionCheck(bool Correct, double LargestError, long WorstInputChannels, bool? OneDnnEnabled)
{
    /// <summary>One line for a program's log.</summary>
    public override string ToString() => Correct
        ? string.Create(CultureInfo.InvariantCulture, $"CPU convolution matches float64 (largest error {LargestError:0.0e+0}){(OneDnnEnabled == false ? "; oneDNN off" : "")}")
        : string.Create(CultureInfo.InvariantCulture, $"CPU convolution is WRONG on this machine: {WorstInputChannels} input channels differ from float64 by {LargestError:0.00e+0}");
}

public static partial class TorchRuntime
{
    // Input widths where broken oneDNN kernels were seen (above the vector block and not a multiple of it, 2026-12-04)
    // and the widths the presets use.
    private static readonly long[] ProbedWidths = [3, 12, 16, 20, 24, 40, 64];

    /// <summary>
    /// Checks LibTorch's float32 CPU convolution against float64 on a few small problems (about a millisecond), and
    /// where it is wrong switches LibTorch's oneDNN (MKL-DNN) backend off for the whole process — what
    /// <c>torch.backends.mkldnn.enabled = False</c> does in PyTorch — and checks again.
    /// </summary>
    /// <remarks>
    /// LibTorch 2.10's oneDNN 3.7.1 convolution returned wrong values (errors of 1–18 on unit-scale outputs, sometimes
    /// NaN) on an AMD EPYC machine with AVX-512 when the input width was above its vector block (16 floats with
    /// AVX-512, 8 with AVX2) and not a multiple of it; its bfloat16 kernels were wrong there too. LibTorch's own
    /// convolution without oneDNN was correct. The
    /// official presets' widths are all multiples of 16, so they are unaffected; models with other widths are not.
    /// </remarks>
    /// <param name="disableOneDnnIfWrong">Switch oneDNN off where the check fails (default); false only reports.</param>
    /// <returns>The result after any switch; <see cref="CpuConvolutionCheck.Correct"/> is false only when the
    /// convolution is still wrong.</returns>
    public static CpuConvolutionCheck VerifyCpuConvolution(bool disableOneDnnIfWrong = true)
    {
        EnsureLoaded();
        var check = ProbeConvolution();
        if (!check.Correct && disableOneDnnIfWrong && SetOneDnnEnabled(false)) check = ProbeConvolution();
        return check;
    }

    /// <summary>Whether LibTorch uses oneDNN for CPU operators (null where the switch cannot be reached).</summary>
    public static bool? OneDnnEnabled
    {
        get
        {
            var native = OneDnnSwitch.Value;
            return native is null ? null : native.Get() != 0;
        }
    }

    /// <summary>Whether LibTorch may use NNPACK for CPU convolutions (null where the switch cannot be reached).</summary>
    internal static bool? NnpackEnabled => NnpackSwitch.Value is { } native ? native.Get() != 0 : null;

    /// <summary>Switches LibTorch's oneDNN backend on or off for the process (PyTorch's
    /// <c>torch.backends.mkldnn.enabled</c>), and NNPACK with it: without oneDNN, LibTorch considers NNPACK for batched
    /// convolutions and, on CPUs NNPACK does not support, logs "Could not initialize NNPACK! Reason: Unsupported
    /// hardware." on every call (about a thousand lines in the digits job), while its own convolution is the one
    /// <see cref="VerifyCpuConvolution"/> checks. Returns false where this LibTorch does not expose the switch.</summary>
    public static bool SetOneDnnEnabled(bool enabled)
    {
        var native = OneDnnSwitch.Value;
        if (native is null) return false;
        native.Set(enabled ? (byte)1 : (byte)0);
        NnpackSwitch.Value?.Set(enabled ? (byte)1 : (byte)0);
        return true;
    }

    private static CpuConvolutionCheck ProbeConvolution()
    {
        // NNPACK off while probing: LibTorch asks whether NNPACK can run before choosing a convolution and, where it
        // cannot (as on the AVX-512 machine of known-issues.md), logs a warning on each of the probe's convolutions.
        var nnpack = NnpackSwitch.Value;
        byte nnpackBefore = nnpack?.Get() ?? 0;
        nnpack?.Set(0);
        try
        {
            return ProbeConvolutionOnce();
        }
        finally
        {
            nnpack?.Set(nnpackBefore);
        }
    }

    private static CpuConvolutionCheck ProbeConvolutionOnce()
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var generator = new Generator(11);
        double worst = 0;
        long worstWidth = ProbedWidths[0];
        foreach (long width in ProbedWidths)
        {
            var x = randn([2, width, 4, 4], generator: generator);
            var weight = randn([32, width, 2, 2], generator: generator).DividedBy(Math.Sqrt(width * 4.0));
            var y = nn.functional.conv2d(x, weight, null, strides: [2, 2]);
            var reference = nn.functional.conv2d(x.to(ScalarType.Float64), weight.to(ScalarType.Float64), null, strides: [2, 2]);
            double error = (y.to(ScalarType.Float64) - reference).abs().max().item<double>();
            if (double.IsNaN(error)) error = double.PositiveInfinity;
            if (error > worst) (worst, worstWidth) = (error, width);
        }
        return new CpuConvolutionCheck(worst < 1e-4, worst, worstWidth, OneDnnEnabled);
    }

    private static readonly Lazy<NativeContextSwitch?> OneDnnSwitch = new(() => NativeContextSwitch.Find(
        ("?userEnabledMkldnn@Context@at@@QEBA_NXZ", "?setUserEnabledMkldnn@Context@at@@QEAAX_N@Z"),
        ("_ZNK2at7Context17userEnabledMkldnnEv", "_ZN2at7Context20setUserEnabledMkldnnEb")));

    private static readonly Lazy<NativeContextSwitch?> NnpackSwitch = new(() => NativeContextSwitch.Find(
        ("?userEnabledNNPACK@Context@at@@QEBA_NXZ", "?setUserEnabledNNPACK@Context@at@@QEAAX_N@Z"),
        ("_ZNK2at7Context17userEnabledNNPACKEv", "_ZN2at7Context20setUserEnabledNNPACKEb")));

    /// <summary>A boolean of <c>at::globalContext()</c> (such as <c>userEnabledMkldnn</c>) and its setter, found in
    /// LibTorch's CPU library by their mangled names (MSVC on Windows, Itanium ABI on Linux and macOS); TorchSharp
    /// does not bind them.</summary>
    private sealed unsafe class NativeContextSwitch
    {
        private readonly delegate* unmanaged<nint> _context;
        private readonly delegate* unmanaged<nint, byte> _get;
        private readonly delegate* unmanaged<nint, byte, void> _set;

        private NativeContextSwitch(nint context, nint get, nint set)
        {
            _context = (delegate* unmanaged<nint>)context;
            _get = (delegate* unmanaged<nint, byte>)get;
            _set = (delegate* unmanaged<nint, byte, void>)set;
        }

        public byte Get() => _get(_context());

        public void Set(byte value) => _set(_context(), value);

        public static NativeContextSwitch? Find((string Get, string Set) windows, (string Get, string Set) itanium)
        {
            var (context, get, set) = OperatingSystem.IsWindows()
                ? ("?globalContext@at@@YAAEAVContext@1@XZ", windows.Get, windows.Set)
                : ("_ZN2at13globalContextEv", itanium.Get, itanium.Set);
            foreach (var library in new[] { "libtorch_cpu.so", "torch_cpu.dll", "libtorch_cpu.dylib", "torch_cpu" })
            {
                if (!NativeLibrary.TryLoad(library, typeof(torch).Assembly, null, out var handle)) continue;
                if (NativeLibrary.TryGetExport(handle, context, out var contextAddress)
                    && NativeLibrary.TryGetExport(handle, get, out var getAddress)
                    && NativeLibrary.TryGetExport(handle, set, out var setAddress))
                    return new NativeContextSwitch(contextAddress, getAddress, setAddress);
            }
            return null;
        }
    }
}
