using System.Runtime.InteropServices;
using System.Text;

namespace PolaFormer.Attention.Kernels.Cuda;

/// <summary>
/// NVRTC, NVIDIA's run-time CUDA C++ compiler (<c>libnvrtc</c>), bound at run time: compiles the kernels' CUDA C
/// source to a cubin for the device's architecture (or to PTX where this NVRTC cannot emit that cubin).
/// </summary>
/// <remarks>
/// Where it is found, in order: a libnvrtc already mapped into the process; the folders of the CUDA libraries already
/// mapped (PyTorch's wheels put libnvrtc beside libcudart in <c>site-packages/nvidia/cu13/lib</c>, and libtorch_cuda
/// in <c>torch/lib</c> reaches them through its RPATH, so neither is on the loader's search path); then the loader's
/// search path by soname (libnvrtc.so.13, .12, .11.2, libnvrtc.so: Debian's non-free <c>libnvrtc11.2</c> is the
/// CUDA 11.8 one). An NVRTC beside the loaded CUDA runtime comes first because its output suits the driver that
/// runtime needs; a newer NVRTC's PTX would not load on an older driver.
/// </remarks>
internal sealed unsafe class Nvrtc
{
    private static readonly string[] Sonames = ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2", "libnvrtc.so"];

    private readonly delegate* unmanaged<int*, int*, int> _version;
    private readonly delegate* unmanaged<int, byte*> _getErrorString;
    private readonly delegate* unmanaged<nint*, byte*, byte*, int, byte**, byte**, int> _createProgram;
    private readonly delegate* unmanaged<nint, int, byte**, int> _compileProgram;
    private readonly delegate* unmanaged<nint*, int> _destroyProgram;
    private readonly delegate* unmanaged<nint, nuint*, int> _getProgramLogSize;
    private readonly delegate* unmanaged<nint, byte*, int> _getProgramLog;
    private readonly delegate* unmanaged<nint, nuint*, int> _getPtxSize;
    private readonly delegate* unmanaged<nint, byte*, int> _getPtx;
    private readonly delegate* unmanaged<nint, nuint*, int> _getCubinSize;     // null before NVRTC 11.1
    private readonly delegate* unmanaged<nint, byte*, int> _getCubin;
    private readonly delegate* unmanaged<int*, int> _getNumSupportedArchs;     // null before NVRTC 11.2
    private readonly delegate* unmanaged<int*, int> _getSupportedArchs;

    private Nvrtc(nint library, string path)
    {
        Path = path;
        nint Export(string name) => NativeLibrary.TryGetExport(library, name, out var f)
            ? f
            : throw new CudaKernelException($"{path} has no export {name}.");
        nint Optional(string name) => NativeLibrary.TryGetExport(library, name, out var f) ? f : 0;
        _version = (delegate* unmanaged<int*, int*, int>)Export("nvrtcVersion");
        _getErrorString = (delegate* unmanaged<int, byte*>)Export("nvrtcGetErrorString");
        _createProgram = (delegate* unmanaged<nint*, byte*, byte*, int, byte**, byte**, int>)Export("nvrtcCreateProgram");
        _compileProgram = (delegate* unmanaged<nint, int, byte**, int>)Export("nvrtcCompileProgram");
        _destroyProgram = (delegate* unmanaged<nint*, int>)Export("nvrtcDestroyProgram");
        _getProgramLogSize = (delegate* unmanaged<nint, nuint*, int>)Export("nvrtcGetProgramLogSize");
        _getProgramLog = (delegate* unmanaged<nint, byte*, int>)Export("nvrtcGetProgramLog");
        _getPtxSize = (delegate* unmanaged<nint, nuint*, int>)Export("nvrtcGetPTXSize");
        _getPtx = (delegate* unmanaged<nint, byte*, int>)Export("nvrtcGetPTX");
        _getCubinSize = (delegate* unmanaged<nint, nuint*, int>)Optional("nvrtcGetCUBINSize");
        _getCubin = (delegate* unmanaged<nint, byte*, int>)Optional("nvrtcGetCUBIN");
        _getNumSupportedArchs = (delegate* unmanaged<int*, int>)Optional("nvrtcGetNumSupportedArchs");
        _getSupportedArchs = (delegate* unmanaged<int*, int>)Optional("nvrtcGetSupportedArchs");
        int major, minor;
        Check(_version(&major, &minor), "nvrtcVersion");
        Version = $"{major}.{minor}";
    }

    /// <summary>The file or soname it was loaded from.</summary>
    public string Path { get; }

    /// <summary>NVRTC's CUDA version, e.g. "11.8".</summary>
    public string Version { get; }

    /// <summary>Whether this NVRTC can emit cubins (11.1 and later); otherwise only PTX.</summary>
    public bool CanEmitCubin => _getCubin != null && _getCubinSize != null;

    /// <summary>The real architectures this NVRTC compiles for (75, 80, 86, 90, …); empty when it cannot say (before 11.2).</summary>
    public IReadOnlyList<int> SupportedArchitectures()
    {
        if (_getNumSupportedArchs == null || _getSupportedArchs == null) return [];
        int count;
        Check(_getNumSupportedArchs(&count), "nvrtcGetNumSupportedArchs");
        var archs = new int[count];
        fixed (int* a = archs) Check(_getSupportedArchs(a), "nvrtcGetSupportedArchs");
        return archs;
    }

    /// <summary>Finds and loads NVRTC (see the class remarks for the order); null with every place tried when none loads.</summary>
    public static Nvrtc? TryLoad(out string reason)
    {
        var tried = new List<string>();
        foreach (var candidate in Candidates())
        {
            // NVRTC opens its builtins library (libnvrtc-builtins.so.X.Y) by soname when it compiles; one from a folder
            // outside the loader's search path is found only when already loaded, so load the one beside it first.
            if (candidate.Contains('/')) PreloadBuiltins(System.IO.Path.GetDirectoryName(candidate)!);
            if (!NativeLibrary.TryLoad(candidate, out var library))
            {
                tried.Add(candidate);
                continue;
            }
            try
            {
                reason = "";
                return new Nvrtc(library, candidate);
            }
            catch (CudaKernelException e)
            {
                tried.Add($"{candidate} ({e.Message})");
            }
        }
        reason = "libnvrtc (NVIDIA's run-time CUDA compiler) was not found; tried " + string.Join(", ", tried);
        return null;
    }

    private static IEnumerable<string> Candidates()
    {
        var mapped = MappedLibraries();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        IEnumerable<string> All()
        {
            foreach (var path in mapped.Where(p => IsNvrtc(System.IO.Path.GetFileName(p)))) yield return path;
            foreach (var folder in CudaFolders(mapped))
            {
                if (!Directory.Exists(folder)) continue;
                foreach (var file in Directory.EnumerateFiles(folder, "libnvrtc.so*").Where(f => IsNvrtc(System.IO.Path.GetFileName(f))).Order(StringComparer.Ordinal))
                    yield return file;
            }
            foreach (var soname in Sonames) yield return soname;
        }
        return All().Where(seen.Add);
    }

    private static bool IsNvrtc(string fileName) =>
        fileName.StartsWith("libnvrtc.so", StringComparison.Ordinal) && !fileName.Contains("builtins", StringComparison.Ordinal);

    /// <summary>Folders of the CUDA libraries mapped into the process, and for a mapped libtorch_cuda the NVIDIA wheels'
    /// library folders of its Python install (<c>torch/lib/../../nvidia/*/lib</c>).</summary>
    private static IEnumerable<string> CudaFolders(IReadOnlyList<string> mapped)
    {
        string[] cudaLibraries = ["libcudart.so", "libcublas.so", "libcublasLt.so", "libcuda.so", "libnvrtc", "libtorch_cuda.so", "libcudnn.so"];
        foreach (var path in mapped.Where(p => cudaLibraries.Any(n => System.IO.Path.GetFileName(p).StartsWith(n, StringComparison.Ordinal))))
        {
            var folder = System.IO.Path.GetDirectoryName(path)!;
            yield return folder;
            if (System.IO.Path.GetFileName(path) != "libtorch_cuda.so") continue;
            var nvidia = System.IO.Path.GetFullPath(System.IO.Path.Combine(folder, "..", "..", "nvidia"));
            if (!Directory.Exists(nvidia)) continue;
            foreach (var lib in Directory.EnumerateDirectories(nvidia).Order(StringComparer.Ordinal).Reverse())   // cu13 before cu12, cuda_nvrtc
                yield return System.IO.Path.Combine(lib, "lib");
        }
    }

    private static void PreloadBuiltins(string folder)
    {
        if (!Directory.Exists(folder)) return;
        foreach (var file in Directory.EnumerateFiles(folder, "libnvrtc-builtins.so*").Order(StringComparer.Ordinal))
            if (NativeLibrary.TryLoad(file, out _)) return;
    }

    /// <summary>Paths of the shared objects mapped into this process (Linux: /proc/self/maps), in first-seen order.</summary>
    internal static IReadOnlyList<string> MappedLibraries()
    {
        try
        {
            return File.ReadLines("/proc/self/maps")
                .Select(l => l.Split(' ', 6, StringSplitOptions.RemoveEmptyEntries))
                .Where(p => p.Length == 6 && p[5].StartsWith('/') && p[5].Contains(".so", StringComparison.Ordinal))
                .Select(p => p[5].Trim())
                .Distinct(StringComparer.Ordinal)
                .ToList();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return [];
        }
    }

    /// <summary>The compiled image: a cubin, or PTX text (NUL-terminated, as cuModuleLoadData wants it).</summary>
    public sealed record Output(byte[] Image, bool IsCubin, string Log);

    /// <summary>Compiles <paramref name="source"/>; a failed compilation throws with NVRTC's log.</summary>
    /// <param name="source">CUDA C source.</param>
    /// <param name="name">A file name for NVRTC's messages.</param>
    /// <param name="architecture">"sm_90" for a cubin (needs <see cref="CanEmitCubin"/>), "compute_90" for PTX, or null for
    /// NVRTC's default virtual architecture (PTX).</param>
    public Output Compile(string source, string name, string? architecture)
    {
        // No language-dialect option: the sources are plain C that every NVRTC version accepts in its default dialect.
        var options = new List<string>();
        if (architecture is not null) options.Add("--gpu-architecture=" + architecture);
        bool cubin = architecture?.StartsWith("sm_", StringComparison.Ordinal) == true;
        if (cubin && !CanEmitCubin) throw new CudaKernelException($"NVRTC {Version} ({Path}) cannot emit cubins; ask for compute_XY instead of {architecture}.");

        nint program;
        var src = Utf8(source);
        var file = Utf8(name);
        fixed (byte* s = src, f = file) Check(_createProgram(&program, s, f, 0, null, null), "nvrtcCreateProgram");
        try
        {
            var encoded = options.Select(Utf8).ToArray();
            var handles = new GCHandle[encoded.Length];
            var pointers = new byte*[encoded.Length];
            try
            {
                for (int i = 0; i < encoded.Length; i++)
                {
                    handles[i] = GCHandle.Alloc(encoded[i], GCHandleType.Pinned);
                    pointers[i] = (byte*)handles[i].AddrOfPinnedObject();
                }
                int result;
                fixed (byte** p = pointers) result = _compileProgram(program, pointers.Length, p);
                string log = Log(program);
                if (result != 0)
                    throw new CudaKernelException(
                        $"NVRTC {Version} could not compile {name} for {architecture ?? "its default architecture"}: {ErrorString(result)}. " +
                        $"Log: {(log.Length == 0 ? "(empty)" : log.Trim())}");
                byte[] image;
                if (cubin)
                {
                    nuint size;
                    Check(_getCubinSize(program, &size), "nvrtcGetCUBINSize");
                    image = new byte[size];
                    fixed (byte* i = image) Check(_getCubin(program, i), "nvrtcGetCUBIN");
                }
                else
                {
                    nuint size;   // includes the terminating NUL
                    Check(_getPtxSize(program, &size), "nvrtcGetPTXSize");
                    image = new byte[size];
                    fixed (byte* i = image) Check(_getPtx(program, i), "nvrtcGetPTX");
                }
                if (image.Length == 0) throw new CudaKernelException($"NVRTC returned an empty image for {name}.");
                return new Output(image, cubin, log);
            }
            finally
            {
                foreach (var h in handles) if (h.IsAllocated) h.Free();
            }
        }
        finally
        {
            _destroyProgram(&program);
        }
    }

    private string Log(nint program)
    {
        nuint size;
        Check(_getProgramLogSize(program, &size), "nvrtcGetProgramLogSize");
        if (size <= 1) return "";
        var bytes = new byte[size];
        fixed (byte* b = bytes) Check(_getProgramLog(program, b), "nvrtcGetProgramLog");
        return Encoding.UTF8.GetString(bytes, 0, (int)size - 1);
    }

    private static byte[] Utf8(string s) => Encoding.UTF8.GetBytes(s + "\0");

    private string ErrorString(int result)
    {
        var text = _getErrorString(result);
        return text == null ? $"nvrtcResult {result}" : $"{Marshal.PtrToStringAnsi((nint)text)} ({result})";
    }

    private void Check(int result, string call)
    {
        if (result != 0) throw new CudaKernelException($"{call} failed: {ErrorString(result)}");
    }
}
