using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace PolaFormer.Training.Distributed;

/// <summary>NCCL's <c>ncclUniqueId</c>: 128 opaque bytes, passed by value to <c>ncclCommInitRank</c>.</summary>
[StructLayout(LayoutKind.Sequential, Size = Length)]
internal unsafe struct NcclUniqueId
{
    public const int Length = 128;
    public fixed byte Bytes[Length];
}

/// <summary>NVIDIA NCCL's C API (<c>nccl.h</c>, NCCL 2.x) through function pointers.</summary>
internal sealed unsafe class NcclLibrary
{
    public const int Success = 0, InProgress = 7;
    public const int OpSum = 0, OpMax = 2;

    /// <summary>NCCL's soname; NVIDIA's packages (libnccl2, pip's nvidia-nccl-cu12/13) all install it.</summary>
    public static readonly string[] DefaultNames = ["libnccl.so.2", "libnccl.so"];

    public readonly delegate* unmanaged<int*, int> GetVersion;
    public readonly delegate* unmanaged<NcclUniqueId*, int> GetUniqueId;
    public readonly delegate* unmanaged<IntPtr*, int, NcclUniqueId, int, int> CommInitRank;
    public readonly delegate* unmanaged<IntPtr, IntPtr, nuint, int, int, IntPtr, IntPtr, int> AllReduce;
    public readonly delegate* unmanaged<IntPtr, IntPtr, nuint, int, int, IntPtr, IntPtr, int> Broadcast;
    public readonly delegate* unmanaged<int> GroupStart;
    public readonly delegate* unmanaged<int> GroupEnd;
    public readonly delegate* unmanaged<IntPtr, int> CommDestroy;
    public readonly delegate* unmanaged<IntPtr, int> CommAbort;
    public readonly delegate* unmanaged<IntPtr, int*, int> CommGetAsyncError;
    public readonly delegate* unmanaged<int, IntPtr> GetErrorString;

    private NcclLibrary(IntPtr handle, string path)
    {
        Path = path;
        IntPtr Get(string name) => NativeLibrary.TryGetExport(handle, name, out var address) ? address
            : throw new DistributedException(-1, "loading NCCL", $"'{path}' has no symbol '{name}'; install NCCL 2.10 or newer.");
        GetVersion = (delegate* unmanaged<int*, int>)Get("ncclGetVersion");
        GetUniqueId = (delegate* unmanaged<NcclUniqueId*, int>)Get("ncclGetUniqueId");
        CommInitRank = (delegate* unmanaged<IntPtr*, int, NcclUniqueId, int, int>)Get("ncclCommInitRank");
        AllReduce = (delegate* unmanaged<IntPtr, IntPtr, nuint, int, int, IntPtr, IntPtr, int>)Get("ncclAllReduce");
        Broadcast = (delegate* unmanaged<IntPtr, IntPtr, nuint, int, int, IntPtr, IntPtr, int>)Get("ncclBroadcast");
        GroupStart = (delegate* unmanaged<int>)Get("ncclGroupStart");
        GroupEnd = (delegate* unmanaged<int>)Get("ncclGroupEnd");
        CommDestroy = (delegate* unmanaged<IntPtr, int>)Get("ncclCommDestroy");
        CommAbort = (delegate* unmanaged<IntPtr, int>)Get("ncclCommAbort");
        CommGetAsyncError = (delegate* unmanaged<IntPtr, int*, int>)Get("ncclCommGetAsyncError");
        GetErrorString = (delegate* unmanaged<int, IntPtr>)Get("ncclGetErrorString");
    }

    /// <summary>Where the library was found.</summary>
    public string Path { get; }

    /// <summary>Opens NCCL, or throws a <see cref="DistributedException"/> that says how to install it.</summary>
    public static NcclLibrary Load(IReadOnlyList<string>? names = null)
    {
        names ??= DefaultNames;
        foreach (var name in names)
            if (NativeLibrary.TryLoad(name, out var handle)) return new NcclLibrary(handle, name);
        throw new DistributedException(-1, "loading NCCL",
            $"The nccl backend needs NVIDIA's NCCL library ({string.Join(" or ", names)}), which was not found on the library path. "
            + "Install it (NVIDIA's CUDA repository: apt-get install libnccl2; or pip install nvidia-nccl-cu12 and add its lib folder to LD_LIBRARY_PATH), "
            + "or use DistributedBackend.Mpi on CPUs.");
    }

    /// <summary>NCCL's <c>ncclDataType_t</c> for <paramref name="dtype"/>, or −1 when NCCL has none.</summary>
    public static int Datatype(ScalarType dtype) => dtype switch
    {
        ScalarType.Int8 => 0,
        ScalarType.Byte => 1,
        ScalarType.Int32 => 2,
        ScalarType.Int64 => 4,
        ScalarType.Float16 => 6,
        ScalarType.Float32 => 7,
        ScalarType.Float64 => 8,
        ScalarType.BFloat16 => 9,
        _ => -1,
    };

    /// <summary>NCCL's text for a result code.</summary>
    public string Describe(int code)
    {
        var text = GetErrorString(code);
        return $"NCCL error {code}: {(text == IntPtr.Zero ? "unknown" : Marshal.PtrToStringUTF8(text))}";
    }

    /// <summary>NCCL's version as major.minor.patch.</summary>
    public string Version()
    {
        int code = 0;
        if (GetVersion(&code) != Success) return "unknown";
        // NCCL ≥ 2.9 encodes major·10000 + minor·100 + patch, older ones major·1000 + minor·100 + patch.
        return code >= 10000 ? $"{code / 10000}.{code / 100 % 100}.{code % 100}" : $"{code / 1000}.{code / 100 % 10}.{code % 100}";
    }
}

/// <summary>
/// The CUDA driver API (<c>libcuda.so.1</c>, installed with every NVIDIA driver) for the two things NCCL needs
/// around LibTorch: making this rank's GPU current (what <c>cudaSetDevice</c> does: its primary context) and
/// polling the legacy default stream, which LibTorch and the NCCL calls share. The driver library is used instead
/// of a <c>libcudart</c> because LibTorch's own runtime copy has a build-specific file name.
/// </summary>
internal sealed unsafe class CudaDriver
{
    public const int Success = 0, NotReady = 600;

    public readonly delegate* unmanaged<uint, int> Init;
    public readonly delegate* unmanaged<int*, int, int> DeviceGet;
    public readonly delegate* unmanaged<IntPtr*, int, int> DevicePrimaryCtxRetain;
    public readonly delegate* unmanaged<IntPtr, int> CtxSetCurrent;
    public readonly delegate* unmanaged<IntPtr, int> StreamQuery;
    public readonly delegate* unmanaged<int, IntPtr*, int> GetErrorString;

    private CudaDriver(IntPtr handle)
    {
        IntPtr Get(string name) => NativeLibrary.TryGetExport(handle, name, out var address) ? address
            : throw new DistributedException(-1, "loading CUDA", $"libcuda.so.1 has no symbol '{name}'; update the NVIDIA driver.");
        Init = (delegate* unmanaged<uint, int>)Get("cuInit");
        DeviceGet = (delegate* unmanaged<int*, int, int>)Get("cuDeviceGet");
        DevicePrimaryCtxRetain = (delegate* unmanaged<IntPtr*, int, int>)Get("cuDevicePrimaryCtxRetain");
        CtxSetCurrent = (delegate* unmanaged<IntPtr, int>)Get("cuCtxSetCurrent");
        StreamQuery = (delegate* unmanaged<IntPtr, int>)Get("cuStreamQuery");
        GetErrorString = (delegate* unmanaged<int, IntPtr*, int>)Get("cuGetErrorString");
    }

    /// <summary>Opens the driver, or throws a <see cref="DistributedException"/> saying none is installed.</summary>
    public static CudaDriver Load()
    {
        if (!NativeLibrary.TryLoad("libcuda.so.1", out var handle))
            throw new DistributedException(-1, "loading CUDA", "The nccl backend needs the NVIDIA driver (libcuda.so.1), which was not found; install the driver or use DistributedBackend.Mpi.");
        var driver = new CudaDriver(handle);
        int code = driver.Init(0);
        if (code != Success) throw new DistributedException(-1, "cuInit", $"cuInit failed: {driver.Describe(code)}");
        return driver;
    }

    /// <summary>The primary context of <paramref name="device"/> (what the CUDA runtime and LibTorch use), retained.</summary>
    public int PrimaryContext(int device, out IntPtr context)
    {
        int dev = 0;
        IntPtr ctx = IntPtr.Zero;
        int code = DeviceGet(&dev, device);
        if (code == Success) code = DevicePrimaryCtxRetain(&ctx, dev);
        context = ctx;
        return code;
    }

    /// <summary>The driver's text for a result code.</summary>
    public string Describe(int code)
    {
        IntPtr text = IntPtr.Zero;
        return GetErrorString(code, &text) == Success && text != IntPtr.Zero ? $"CUDA error {code}: {Marshal.PtrToStringUTF8(text)}" : $"CUDA error {code}";
    }
}
