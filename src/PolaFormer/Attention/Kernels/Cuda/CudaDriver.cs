using System.Runtime.InteropServices;

namespace PolaFormer.Attention.Kernels.Cuda;

/// <summary>A CUDA driver API or NVRTC call that failed, with the function's name and the library's own message.</summary>
public sealed class CudaKernelException : Exception
{
    /// <summary>Creates the exception with its message.</summary>
    public CudaKernelException(string message) : base(message) { }

    /// <summary>Creates the exception with its message and cause.</summary>
    public CudaKernelException(string message, Exception inner) : base(message, inner) { }
}

/// <summary>
/// The few entry points of the CUDA driver API (<c>libcuda.so.1</c>, installed with the NVIDIA driver) that the fused
/// kernels need, bound at run time with <see cref="NativeLibrary"/> so that a machine without the driver only loses
/// the kernels. The driver API rather than the runtime API (libcudart) because it loads compiled code
/// (<c>cuModuleLoadData</c>) and launches it by handle; the runtime API cannot load a cubin made at run time.
/// </summary>
/// <remarks>Handles (<c>CUcontext</c>, <c>CUmodule</c>, <c>CUfunction</c>, <c>CUstream</c>) are pointers; a
/// <c>CUdevice</c> is an int. Every call returns a <c>CUresult</c>, 0 on success; <see cref="Check"/> turns anything
/// else into a <see cref="CudaKernelException"/> naming the call.</remarks>
internal sealed unsafe class CudaDriver
{
    public const string LibraryName = "libcuda.so.1";
    private const int ComputeCapabilityMajor = 75;   // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
    private const int ComputeCapabilityMinor = 76;   // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR

    private readonly delegate* unmanaged<uint, int> _init;
    private readonly delegate* unmanaged<int*, int> _driverGetVersion;
    private readonly delegate* unmanaged<int*, int> _deviceGetCount;
    private readonly delegate* unmanaged<int*, int, int> _deviceGet;
    private readonly delegate* unmanaged<int*, int, int, int> _deviceGetAttribute;
    private readonly delegate* unmanaged<nint*, int, int> _primaryCtxRetain;
    private readonly delegate* unmanaged<nint*, int> _ctxGetCurrent;
    private readonly delegate* unmanaged<nint, int> _ctxSetCurrent;
    private readonly delegate* unmanaged<int> _ctxSynchronize;
    private readonly delegate* unmanaged<nint*, void*, int> _moduleLoadData;
    private readonly delegate* unmanaged<nint*, nint, byte*, int> _moduleGetFunction;
    private readonly delegate* unmanaged<nint, uint, uint, uint, uint, uint, uint, uint, nint, void**, void**, int> _launchKernel;
    private readonly delegate* unmanaged<int, byte**, int> _getErrorName;
    private readonly delegate* unmanaged<int, byte**, int> _getErrorString;

    private CudaDriver(nint library)
    {
        nint Export(string name) => NativeLibrary.TryGetExport(library, name, out var f)
            ? f
            : throw new CudaKernelException($"{LibraryName} has no export {name} (driver too old?).");
        _init = (delegate* unmanaged<uint, int>)Export("cuInit");
        _driverGetVersion = (delegate* unmanaged<int*, int>)Export("cuDriverGetVersion");
        _deviceGetCount = (delegate* unmanaged<int*, int>)Export("cuDeviceGetCount");
        _deviceGet = (delegate* unmanaged<int*, int, int>)Export("cuDeviceGet");
        _deviceGetAttribute = (delegate* unmanaged<int*, int, int, int>)Export("cuDeviceGetAttribute");
        _primaryCtxRetain = (delegate* unmanaged<nint*, int, int>)Export("cuDevicePrimaryCtxRetain");
        _ctxGetCurrent = (delegate* unmanaged<nint*, int>)Export("cuCtxGetCurrent");
        _ctxSetCurrent = (delegate* unmanaged<nint, int>)Export("cuCtxSetCurrent");
        _ctxSynchronize = (delegate* unmanaged<int>)Export("cuCtxSynchronize");
        _moduleLoadData = (delegate* unmanaged<nint*, void*, int>)Export("cuModuleLoadData");
        _moduleGetFunction = (delegate* unmanaged<nint*, nint, byte*, int>)Export("cuModuleGetFunction");
        _launchKernel = (delegate* unmanaged<nint, uint, uint, uint, uint, uint, uint, uint, nint, void**, void**, int>)Export("cuLaunchKernel");
        _getErrorName = (delegate* unmanaged<int, byte**, int>)Export("cuGetErrorName");
        _getErrorString = (delegate* unmanaged<int, byte**, int>)Export("cuGetErrorString");
    }

    /// <summary>Loads the driver library and calls <c>cuInit</c>; null with the reason when either fails.</summary>
    public static CudaDriver? TryLoad(out string reason)
    {
        if (!NativeLibrary.TryLoad(LibraryName, out var library))
        {
            reason = $"{LibraryName} (the NVIDIA driver's CUDA library) could not be loaded: no NVIDIA driver on this machine";
            return null;
        }
        try
        {
            var driver = new CudaDriver(library);
            driver.Check(driver._init(0), "cuInit");
            reason = "";
            return driver;
        }
        catch (CudaKernelException e)
        {
            reason = e.Message;
            return null;
        }
    }

    /// <summary>The driver's CUDA version as major.minor (cuDriverGetVersion's 12040 is "12.4").</summary>
    public string Version()
    {
        int v;
        Check(_driverGetVersion(&v), "cuDriverGetVersion");
        return $"{v / 1000}.{v % 1000 / 10}";
    }

    public int DeviceCount()
    {
        int n;
        Check(_deviceGetCount(&n), "cuDeviceGetCount");
        return n;
    }

    /// <summary>The device handle of a CUDA ordinal (the index LibTorch's <c>cuda:N</c> uses: both count the devices
    /// that CUDA_VISIBLE_DEVICES leaves visible).</summary>
    public int Device(int ordinal)
    {
        int device;
        Check(_deviceGet(&device, ordinal), "cuDeviceGet");
        return device;
    }

    public (int Major, int Minor) ComputeCapability(int device)
    {
        int major, minor;
        Check(_deviceGetAttribute(&major, ComputeCapabilityMajor, device), "cuDeviceGetAttribute(COMPUTE_CAPABILITY_MAJOR)");
        Check(_deviceGetAttribute(&minor, ComputeCapabilityMinor, device), "cuDeviceGetAttribute(COMPUTE_CAPABILITY_MINOR)");
        return (major, minor);
    }

    /// <summary>The device's primary context: the one the CUDA runtime, and so LibTorch, uses. Retained once for the
    /// life of the process (it is never released: LibTorch keeps it alive anyway).</summary>
    public nint RetainPrimaryContext(int device)
    {
        nint context;
        Check(_primaryCtxRetain(&context, device), "cuDevicePrimaryCtxRetain");
        return context;
    }

    /// <summary>Makes <paramref name="context"/> current on this thread for the scope's life and restores the previous
    /// one afterwards, so LibTorch's view of the current device is left as it was.</summary>
    public ContextScope Use(nint context)
    {
        nint previous;
        Check(_ctxGetCurrent(&previous), "cuCtxGetCurrent");
        if (previous != context) Check(_ctxSetCurrent(context), "cuCtxSetCurrent");
        return new ContextScope(this, previous, previous != context);
    }

    public readonly struct ContextScope(CudaDriver driver, nint previous, bool restore) : IDisposable
    {
        public void Dispose()
        {
            if (restore) driver.Check(driver._ctxSetCurrent(previous), "cuCtxSetCurrent (restoring the previous context)");
        }
    }

    /// <summary>Loads a cubin or PTX image into the current context.</summary>
    public nint LoadModule(byte[] image, string what)
    {
        nint module;
        fixed (byte* data = image) Check(_moduleLoadData(&module, data), $"cuModuleLoadData({what})");
        return module;
    }

    public nint Function(nint module, string name)
    {
        nint function;
        var bytes = System.Text.Encoding.ASCII.GetBytes(name + "\0");
        fixed (byte* n = bytes) Check(_moduleGetFunction(&function, module, n), $"cuModuleGetFunction({name})");
        return function;
    }

    /// <summary>Queues a kernel on <paramref name="stream"/> (0: the legacy default stream, the one LibTorch and so
    /// TorchSharp use). <paramref name="parameters"/> holds one pointer per kernel argument, to its value.</summary>
    public void Launch(nint function, string name, uint blocks, uint threadsPerBlock, void** parameters, nint stream = 0)
    {
        Check(_launchKernel(function, blocks, 1, 1, threadsPerBlock, 1, 1, 0, stream, parameters, null), $"cuLaunchKernel({name})");
    }

    /// <summary>Waits for the current context's queued work; reports an asynchronous failure of a kernel.</summary>
    public void Synchronize(string after) => Check(_ctxSynchronize(), $"cuCtxSynchronize after {after}");

    public void Check(int result, string call)
    {
        if (result == 0) return;
        byte* name = null, text = null;
        string n = _getErrorName(result, &name) == 0 && name != null ? Marshal.PtrToStringAnsi((nint)name) ?? "?" : "?";
        string t = _getErrorString(result, &text) == 0 && text != null ? Marshal.PtrToStringAnsi((nint)text) ?? "" : "";
        throw new CudaKernelException($"{call} failed: CUresult {result} {n}{(t.Length > 0 ? " (" + t + ")" : "")}");
    }
}
