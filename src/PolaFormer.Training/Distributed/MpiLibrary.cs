using System.Runtime.InteropServices;
using System.Text;
using static TorchSharp.torch;

namespace PolaFormer.Training.Distributed;

/// <summary>
/// Open MPI's C API through function pointers. Open MPI's predefined handles (<c>MPI_COMM_WORLD</c>,
/// <c>MPI_FLOAT</c>, <c>MPI_SUM</c>, …) are the addresses of exported globals (<c>ompi_mpi_comm_world</c>, …), so
/// they come from the same symbol lookup; MPICH and its derivatives use integer handles and are not supported.
/// The library is opened with <c>RTLD_GLOBAL</c>, as mpi4py does, so the plugins Open MPI loads find its symbols.
/// </summary>
internal sealed unsafe class MpiLibrary
{
    public const int Success = 0;
    public const int ThreadMultiple = 3;
    private const int RtldNow = 0x2, RtldGlobal = 0x100;

    /// <summary>Names tried in order: Open MPI 4 and 5 (Debian, Ubuntu, Fedora, conda) all ship libmpi.so.40.</summary>
    public static readonly string[] DefaultNames = ["libmpi.so.40", "libmpi.so"];

    public readonly delegate* unmanaged<int*, byte***, int, int*, int> InitThread;
    public readonly delegate* unmanaged<int*, int> Initialized;
    public readonly delegate* unmanaged<int*, int> Finalized;
    public readonly delegate* unmanaged<int> Finalize;
    public readonly delegate* unmanaged<IntPtr, int*, int> CommRank;
    public readonly delegate* unmanaged<IntPtr, int*, int> CommSize;
    public readonly delegate* unmanaged<IntPtr, int, int, IntPtr, IntPtr*, int> CommSplitType;
    public readonly delegate* unmanaged<IntPtr*, int> CommFree;
    public readonly delegate* unmanaged<IntPtr, IntPtr, int> CommSetErrhandler;
    public readonly delegate* unmanaged<IntPtr, IntPtr, int, IntPtr, IntPtr, IntPtr, int> Allreduce;
    public readonly delegate* unmanaged<IntPtr, int, IntPtr, int, IntPtr, int> Bcast;
    public readonly delegate* unmanaged<IntPtr, int> Barrier;
    public readonly delegate* unmanaged<IntPtr, int, int> Abort;
    public readonly delegate* unmanaged<int, byte*, int*, int> ErrorString;
    public readonly delegate* unmanaged<int*, int*, int> GetVersion;

    public readonly IntPtr CommWorld, InfoNull, ErrorsReturn, OpSum, OpMax;
    public readonly IntPtr Byte, Float, Double, Int32, Int64, UInt8, Int8, Int16;

    private MpiLibrary(IntPtr handle, string path)
    {
        Path = path;
        IntPtr Get(string name) => NativeLibrary.TryGetExport(handle, name, out var address) ? address
            : throw new DistributedException(-1, "loading MPI",
                $"'{path}' has no symbol '{name}': it is not Open MPI (MPICH-style MPIs are not supported); install Open MPI (Debian: apt-get install openmpi-bin).");
        InitThread = (delegate* unmanaged<int*, byte***, int, int*, int>)Get("MPI_Init_thread");
        Initialized = (delegate* unmanaged<int*, int>)Get("MPI_Initialized");
        Finalized = (delegate* unmanaged<int*, int>)Get("MPI_Finalized");
        Finalize = (delegate* unmanaged<int>)Get("MPI_Finalize");
        CommRank = (delegate* unmanaged<IntPtr, int*, int>)Get("MPI_Comm_rank");
        CommSize = (delegate* unmanaged<IntPtr, int*, int>)Get("MPI_Comm_size");
        CommSplitType = (delegate* unmanaged<IntPtr, int, int, IntPtr, IntPtr*, int>)Get("MPI_Comm_split_type");
        CommFree = (delegate* unmanaged<IntPtr*, int>)Get("MPI_Comm_free");
        CommSetErrhandler = (delegate* unmanaged<IntPtr, IntPtr, int>)Get("MPI_Comm_set_errhandler");
        Allreduce = (delegate* unmanaged<IntPtr, IntPtr, int, IntPtr, IntPtr, IntPtr, int>)Get("MPI_Allreduce");
        Bcast = (delegate* unmanaged<IntPtr, int, IntPtr, int, IntPtr, int>)Get("MPI_Bcast");
        Barrier = (delegate* unmanaged<IntPtr, int>)Get("MPI_Barrier");
        Abort = (delegate* unmanaged<IntPtr, int, int>)Get("MPI_Abort");
        ErrorString = (delegate* unmanaged<int, byte*, int*, int>)Get("MPI_Error_string");
        GetVersion = (delegate* unmanaged<int*, int*, int>)Get("MPI_Get_version");

        CommWorld = Get("ompi_mpi_comm_world");
        InfoNull = Get("ompi_mpi_info_null");
        ErrorsReturn = Get("ompi_mpi_errors_return");
        OpSum = Get("ompi_mpi_op_sum");
        OpMax = Get("ompi_mpi_op_max");
        Byte = Get("ompi_mpi_byte");
        Float = Get("ompi_mpi_float");
        Double = Get("ompi_mpi_double");
        Int32 = Get("ompi_mpi_int32_t");
        Int64 = Get("ompi_mpi_int64_t");
        UInt8 = Get("ompi_mpi_uint8_t");
        Int8 = Get("ompi_mpi_int8_t");
        Int16 = Get("ompi_mpi_int16_t");
    }

    /// <summary>Where the library was found.</summary>
    public string Path { get; }

    /// <summary>MPI_IN_PLACE is <c>(void*)1</c> in Open MPI.</summary>
    public static IntPtr InPlace => 1;

    /// <summary>Opens Open MPI, or throws a <see cref="DistributedException"/> that says how to install it.</summary>
    public static MpiLibrary Load(IReadOnlyList<string>? names = null)
    {
        names ??= DefaultNames;
        var errors = new List<string>();
        foreach (var name in names)
        {
            var handle = Dlopen(name, out string? error);
            if (handle != IntPtr.Zero) return new MpiLibrary(handle, name);
            errors.Add(error ?? name);
        }
        throw new DistributedException(-1, "loading MPI",
            $"The mpi backend needs Open MPI's library ({string.Join(" or ", names)}), which could not be loaded ({string.Join("; ", errors)}). "
            + "Install Open MPI (Debian/Ubuntu: apt-get install openmpi-bin; eng/prerequisites.sh does it), or choose another DistributedBackend.");
    }

    /// <summary>The MPI datatype for reductions over <paramref name="dtype"/>, or zero when MPI has none.</summary>
    public IntPtr Datatype(ScalarType dtype) => dtype switch
    {
        ScalarType.Float32 => Float,
        ScalarType.Float64 => Double,
        ScalarType.Int32 => Int32,
        ScalarType.Int64 => Int64,
        ScalarType.Byte => UInt8,
        ScalarType.Int8 => Int8,
        ScalarType.Int16 => Int16,
        _ => IntPtr.Zero,
    };

    /// <summary>Open MPI's text for an error code.</summary>
    public string Describe(int code)
    {
        var buffer = stackalloc byte[512];
        int length = 0;
        return ErrorString(code, buffer, &length) == Success
            ? $"MPI error {code}: {Encoding.ASCII.GetString(buffer, Math.Clamp(length, 0, 512))}"
            : $"MPI error {code}";
    }

    private static IntPtr Dlopen(string name, out string? error)
    {
        error = null;
        try
        {
            var handle = Libc.dlopen(name, RtldNow | RtldGlobal);
            if (handle == IntPtr.Zero) error = Marshal.PtrToStringUTF8(Libc.dlerror());
            return handle;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            // Not glibc (or not Linux): fall back to the runtime's loader.
            if (NativeLibrary.TryLoad(name, out var handle)) return handle;
            error = $"{name}: {e.Message}";
            return IntPtr.Zero;
        }
    }

    private static class Libc
    {
        [DllImport("libc.so.6", CharSet = CharSet.Ansi, BestFitMapping = false)]
        public static extern IntPtr dlopen([MarshalAs(UnmanagedType.LPUTF8Str)] string file, int mode);

        [DllImport("libc.so.6")]
        public static extern IntPtr dlerror();
    }
}
