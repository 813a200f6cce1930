using System.Collections.Concurrent;
using System.Globalization;
using TorchSharp;
using static TorchSharp.torch;

namespace PolaFormer.Attention.Kernels.Cuda;

/// <summary>
/// The fused CUDA kernels of the polarity core (feature map, gated readout; forward and backward), compiled at run
/// time. On a CUDA float32 tensor <see cref="PolarityAttention"/> uses them when they are available and falls back to
/// LibTorch operators otherwise; <see cref="Status"/> says which, and why.
/// </summary>
/// <remarks>
/// <para>How: the kernels are CUDA C held as strings in this library, compiled once per process and device by NVRTC
/// (<c>libnvrtc</c>, which ships with PyTorch's CUDA wheels and CUDA toolkits) for the device's architecture, loaded
/// and launched with the CUDA driver API (<c>libcuda.so.1</c>) through P/Invoke. They run in the device's primary
/// context and on the legacy default stream, which are LibTorch's (TorchSharp never changes the stream), and read and
/// write LibTorch's tensor memory directly, so there are no copies and no synchronisation beyond stream order.</para>
/// <para>Why not ILGPU or another .NET GPU library: those own their context and buffers (ILGPU's CudaAccelerator
/// creates a context of its own with cuCtxCreate, not the primary one), so LibTorch tensors would have to be copied
/// into their allocations and back, which is the cost these kernels exist to remove. NVRTC plus four driver calls need
/// no dependency beyond what a CUDA LibTorch install already has.</para>
/// <para>Switch: the environment variable <c>POLAFORMER_CUDA_KERNELS</c> (read once per process): <c>off</c> (or 0,
/// false) keeps the LibTorch-operator path; <c>check</c> synchronises after every launch so that a failing kernel is
/// reported at its launch (slow; for debugging); unset or <c>on</c> uses the kernels where available.</para>
/// </remarks>
public static class CudaKernels
{
    /// <summary>The environment variable that switches the kernels off (<c>off</c>) or into checking mode (<c>check</c>).</summary>
    public const string SwitchVariable = "POLAFORMER_CUDA_KERNELS";

    // Read once: the process-wide switch; the override below (tests, the GPU check's A/B timings) wins over it.
    private static readonly Lazy<(bool Enabled, bool Synchronize, string Reason)> Switch =
        new(() => ParseSwitch(Environment.GetEnvironmentVariable(SwitchVariable)));

    private static volatile int _override;   // 0: none; 1: kernels on; 2: off (see EnabledOverride)
    private static volatile bool _synchronizeOverride;

    /// <summary>For tests and the GPU check's A/B timing in one process: null follows the environment variable, true
    /// uses the kernels where available, false keeps the LibTorch-operator path. Read at every call.</summary>
    internal static bool? EnabledOverride
    {
        get => _override switch { 1 => true, 2 => false, _ => null };
        set => _override = value switch { true => 1, false => 2, null => 0 };
    }

    /// <summary>For the GPU check: synchronise after every launch and check the kernel's result (as <c>check</c> does).</summary>
    internal static bool SynchronizeAfterLaunch
    {
        get => _synchronizeOverride || Switch.Value.Synchronize;
        set => _synchronizeOverride = value;
    }

    private static volatile bool _poisonOutputs;
    private static long _launches;

    /// <summary>For checks: fill every output buffer with NaN before the kernel that should write all of it.</summary>
    internal static bool PoisonOutputs
    {
        get => _poisonOutputs;
        set => _poisonOutputs = value;
    }

    /// <summary>Kernels queued on a GPU in this process so far (the checks use it to see that the kernels ran).</summary>
    internal static long Launches => Interlocked.Read(ref _launches);

    internal static void CountLaunch() => Interlocked.Increment(ref _launches);

    internal static (bool Enabled, bool Synchronize, string Reason) ParseSwitch(string? value) =>
        (value ?? "").Trim().ToLowerInvariant() switch
        {
            "" or "on" or "1" or "true" => (true, false, ""),
            "check" => (true, true, ""),
            "off" or "0" or "false" => (false, false, $"switched off by {SwitchVariable}={value}"),
            _ => (false, false, $"{SwitchVariable}={value} is not one of on, off, check; kernels left off"),
        };

    /// <summary>Whether the kernels serve CUDA tensors on device <paramref name="deviceIndex"/>, and if not, why.
    /// The first call for a device loads the driver and NVRTC and compiles the kernels (a few hundred milliseconds);
    /// later calls return the cached result.</summary>
    /// <param name="deviceIndex">The CUDA ordinal (<c>cuda:N</c>).</param>
    public static CudaKernelStatus Status(int deviceIndex = 0)
    {
        if (!Enabled(out var reason)) return CudaKernelStatus.Unavailable(deviceIndex, reason);
        return CudaKernelRuntime.Process.Value.Status(deviceIndex);
    }

    private static bool Enabled(out string reason)
    {
        switch (EnabledOverride)
        {
            case true: reason = ""; return true;
            case false: reason = "switched off in this process (testing override)"; return false;
        }
        var (enabled, _, why) = Switch.Value;
        reason = why;
        return enabled;
    }

    /// <summary>The launcher for <paramref name="t"/>'s device when <paramref name="t"/> is a CUDA float32 tensor and
    /// the kernels are on and available there; otherwise null (the caller takes the LibTorch-operator path).</summary>
    internal static KernelLauncher? LauncherFor(Tensor t)
    {
        if (t.device_type != DeviceType.CUDA || t.dtype != ScalarType.Float32 || !Enabled(out _)) return null;
        return CudaKernelRuntime.Process.Value.Launcher(Math.Max(0, t.device_index));
    }
}

/// <summary>Whether the fused CUDA kernels are in use on a device; <see cref="ToString"/> gives one line for a log.</summary>
public sealed class CudaKernelStatus
{
    private CudaKernelStatus(bool available, string reason, int device)
    {
        Available = available;
        Reason = reason;
        Device = device;
    }

    /// <summary>True when CUDA float32 tensors on <see cref="Device"/> go through the kernels.</summary>
    public bool Available { get; }

    /// <summary>Why not, in one line (empty when available): no libcuda, no libnvrtc, a compile error, switched off, ….</summary>
    public string Reason { get; }

    /// <summary>The CUDA ordinal this status is for.</summary>
    public int Device { get; }

    /// <summary>The compute capability, e.g. "9.0" (null when not known).</summary>
    public string? ComputeCapability { get; private init; }

    /// <summary>What was compiled and loaded: "cubin sm_90" or "ptx compute_90".</summary>
    public string? Image { get; private init; }

    /// <summary>The NVRTC library used and its version.</summary>
    public string? Nvrtc { get; private init; }

    /// <summary>The CUDA driver's version.</summary>
    public string? Driver { get; private init; }

    internal static CudaKernelStatus Unavailable(int device, string reason) => new(false, reason, device);

    internal static CudaKernelStatus Ready(int device, string computeCapability, string image, string nvrtc, string driver) =>
        new(true, "", device) { ComputeCapability = computeCapability, Image = image, Nvrtc = nvrtc, Driver = driver };

    /// <inheritdoc/>
    public override string ToString() => Available
        ? $"CUDA kernels: available on cuda:{Device} (compute capability {ComputeCapability}, {Image}, NVRTC {Nvrtc}, driver CUDA {Driver})"
        : $"CUDA kernels: unavailable on cuda:{Device}: {Reason}";
}

/// <summary>
/// The per-process state behind <see cref="CudaKernels"/>: the driver and NVRTC libraries (loaded once) and the
/// compiled kernels per device. It is per process, created on first use and never torn down, because what it holds
/// is per process too: a CUDA primary context is shared by everything in the process, and a loaded module lives as
/// long as that context. Internal: the public surface is <see cref="CudaKernels.Status"/> only.
/// </summary>
internal sealed class CudaKernelRuntime
{
    public static readonly Lazy<CudaKernelRuntime> Process = new(() => new CudaKernelRuntime(), LazyThreadSafetyMode.ExecutionAndPublication);

    private readonly CudaDriver? _driver;
    private readonly string _driverFailure = "";
    private readonly Lazy<(Nvrtc? Compiler, string Failure)> _nvrtc;
    private readonly ConcurrentDictionary<int, Lazy<(CudaDeviceKernels? Kernels, CudaKernelStatus Status)>> _devices = new();

    private CudaKernelRuntime()
    {
        _driver = CudaDriver.TryLoad(out _driverFailure);
        _nvrtc = new(() => (Nvrtc.TryLoad(out var reason), reason));
    }

    public CudaKernelStatus Status(int device) => Device(device).Status;

    public KernelLauncher? Launcher(int device) => Device(device).Kernels;

    private (CudaDeviceKernels? Kernels, CudaKernelStatus Status) Device(int device) =>
        _devices.GetOrAdd(device, d => new(() => Create(d), LazyThreadSafetyMode.ExecutionAndPublication)).Value;

    private (CudaDeviceKernels?, CudaKernelStatus) Create(int device)
    {
        if (_driver is null) return (null, CudaKernelStatus.Unavailable(device, _driverFailure));
        try
        {
            int count = _driver.DeviceCount();
            if (device < 0 || device >= count)
                return (null, CudaKernelStatus.Unavailable(device, $"the CUDA driver sees {count} device(s); there is no cuda:{device}"));
            var (compiler, failure) = _nvrtc.Value;
            if (compiler is null) return (null, CudaKernelStatus.Unavailable(device, failure));
            var kernels = CudaDeviceKernels.Create(_driver, compiler, device);
            return (kernels, CudaKernelStatus.Ready(device, kernels.ComputeCapability, kernels.Image, $"{compiler.Version} ({compiler.Path})", _driver.Version()));
        }
        catch (CudaKernelException e)
        {
            return (null, CudaKernelStatus.Unavailable(device, OneLine(e.Message)));
        }
    }

    internal static string OneLine(string text)
    {
        var line = string.Join(" ", text.Split(['\r', '\n'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
        return line.Length <= 600 ? line : line[..600] + " …";
    }
}

/// <summary>The kernels compiled and loaded for one device, launched in its primary context on the default stream.</summary>
internal sealed unsafe class CudaDeviceKernels : KernelLauncher
{
    private readonly CudaDriver _driver;
    private readonly nint _context;
    private readonly Dictionary<string, nint> _functions;

    private CudaDeviceKernels(CudaDriver driver, nint context, Dictionary<string, nint> functions, string computeCapability, string image)
    {
        _driver = driver;
        _context = context;
        _functions = functions;
        ComputeCapability = computeCapability;
        Image = image;
    }

    public string ComputeCapability { get; }
    public string Image { get; }

    public static CudaDeviceKernels Create(CudaDriver driver, Nvrtc nvrtc, int ordinal)
    {
        int device = driver.Device(ordinal);
        var (major, minor) = driver.ComputeCapability(device);
        var architecture = ChooseArchitecture(nvrtc, major * 10 + minor);
        var context = driver.RetainPrimaryContext(device);
        var functions = new Dictionary<string, nint>(StringComparer.Ordinal);
        foreach (var source in CudaSources.All)
        {
            var output = nvrtc.Compile(source.Code, source.FileName, architecture);
            using (driver.Use(context))
            {
                var module = driver.LoadModule(output.Image, $"{source.FileName} as {architecture}");
                foreach (var kernel in source.Kernels) functions.Add(kernel, driver.Function(module, kernel));
            }
        }
        string image = architecture.StartsWith("sm_", StringComparison.Ordinal) ? "cubin " + architecture : "ptx " + architecture;
        return new CudaDeviceKernels(driver, context, functions, string.Create(CultureInfo.InvariantCulture, $"{major}.{minor}"), image);
    }

    /// <summary>A cubin for the device's own architecture when this NVRTC can make one; otherwise PTX for the newest
    /// virtual architecture it knows that the device can run (the driver compiles PTX for the device on load).</summary>
    internal static string ChooseArchitecture(Nvrtc nvrtc, int deviceArchitecture)
    {
        var supported = nvrtc.SupportedArchitectures();
        if (nvrtc.CanEmitCubin && (supported.Count == 0 || supported.Contains(deviceArchitecture)))
            return $"sm_{deviceArchitecture}";
        var below = supported.Where(a => a <= deviceArchitecture).ToList();
        if (supported.Count > 0 && below.Count == 0)
            throw new CudaKernelException($"NVRTC {nvrtc.Version} knows no architecture at or below the device's sm_{deviceArchitecture} (it knows {string.Join(", ", supported)}).");
        return $"compute_{(below.Count > 0 ? below.Max() : deviceArchitecture)}";
    }

    protected override void LaunchCore(string kernel, uint blocks, uint threadsPerBlock, void** parameters, int count)
    {
        if (!_functions.TryGetValue(kernel, out var function)) throw new CudaKernelException($"No kernel named {kernel} was compiled.");
        using (_driver.Use(_context))
        {
            _driver.Launch(function, kernel, blocks, threadsPerBlock, parameters);
            CudaKernels.CountLaunch();
            if (CudaKernels.SynchronizeAfterLaunch) _driver.Synchronize(kernel);
        }
    }
}

/// <summary>A CUDA C source file held in this library and the kernels (<c>extern "C"</c> names) it defines.</summary>
internal sealed record CudaSource(string FileName, string Code, IReadOnlyList<string> Kernels);

/// <summary>Every source the runtime compiles.</summary>
internal static class CudaSources
{
    public static IReadOnlyList<CudaSource> All => [CudaFeatureMap.Source, CudaGatedReadout.Source];
}
